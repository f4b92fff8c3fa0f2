"""Delete a run folder — only one that movies2scenes made (``make clean-demo``; issue 41).

    python -m movies2scenes.apps.clean RUN_DIR

A folder is deleted only when it is a real directory (not a link), not the file system's root, the
home folder or the current folder (or one above them), and every entry in it is a name a run holds
(:data:`RUN_ENTRIES`: the stage folders, the demo world, browse's index, the stage lock files) and
at least one stage or world folder is there. Anything else — a user's file beside the stages, a
folder name with a space the shell split — is refused with exit 2 naming what is foreign, and
nothing is deleted. Exit 0 when the folder was deleted or does not exist.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from movies2scenes.layout import FOLDERS

RUN_ENTRIES = frozenset(FOLDERS) | {"world", "browse_index", "logs"}


class RefusedToDelete(Exception):
    pass


def foreign_entries(run: Path) -> list[str]:
    """The entries of ``run`` that no movies2scenes run holds (lock files ``.lock*`` are ours)."""
    return sorted(p.name for p in run.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith(".lock"))


def check_deletable(run: Path) -> None:
    """Raise :class:`RefusedToDelete` unless ``run`` is a run folder we may delete (module doc)."""
    if run.is_symlink():
        raise RefusedToDelete(f"{run} is a symbolic link; delete the folder it points to yourself")
    if not run.is_dir():
        raise RefusedToDelete(f"{run} is not a folder")
    resolved = run.resolve()
    guarded = {Path("/"), Path.home().resolve(), Path.cwd().resolve()}
    if any(resolved == g or resolved in g.parents for g in guarded):
        raise RefusedToDelete(f"{run} is {resolved}: the root, the home folder, the current folder or above them")
    foreign = foreign_entries(run)
    if foreign:
        raise RefusedToDelete(f"{run} holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} no movies2scenes "
                              f"run makes ({', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}); "
                              "nothing deleted")
    if not any((run / name).is_dir() for name in RUN_ENTRIES):
        raise RefusedToDelete(f"{run} holds no stage folder or demo world; not a movies2scenes run, nothing deleted")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].strip():
        print("usage: python -m movies2scenes.apps.clean RUN_DIR (one folder)", file=sys.stderr)
        return 2
    run = Path(args[0])
    if not run.exists() and not run.is_symlink():
        print(f"clean: {run} does not exist; nothing to delete")
        return 0
    try:
        check_deletable(run)
    except RefusedToDelete as e:
        print(f"clean: refused: {e}", file=sys.stderr)
        return 2
    shutil.rmtree(run)
    print(f"clean: deleted the run folder {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
