"""The errors a command can end with, and the exit status of each — one table, read by the CLI.

* :class:`ConfigError` (exit 2) — bad input: a config key or override, a file's contents, a damaged
  artefact (``integrity.DamagedArtefact``), a model file, a locked stage. The root of the "your
  input" taxonomy: its subclasses live where they are raised.
* :class:`CatalogueError` (exit 2) — a catalogue or watch log with bad rows (every ``file:row:
  reason``).
* :class:`NonFiniteLoss` (exit 3) — training produced a NaN/inf loss; the last good checkpoint is kept.
* :class:`OutputError` (exit 4) — writing one of *our own* artefacts failed (disk full, quota,
  permissions): never an input's fault; nothing is marked done and a rerun continues.
* :class:`ExecutorError` (exit 1) — the executor could not finish the items (a worker died more
  often than allowed); finished items are kept.

Ctrl-C exits 130 (the CLI says what was kept). Nothing here imports the rest of the package."""

from __future__ import annotations

_MAX_SHOWN = 20  # problems a CatalogueError message lists before "... and N more"


class ConfigError(ValueError):
    """A config file or override that does not match the schema, or an input that cannot be used."""


class CatalogueError(ValueError):
    """Invalid catalogue or watch-log file; ``problems`` holds every ``file:row: reason``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:_MAX_SHOWN])
        more = f"\n  ... and {len(problems) - _MAX_SHOWN} more" if len(problems) > _MAX_SHOWN else ""
        super().__init__(f"{len(problems)} problem(s):\n  {shown}{more}")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class OutputError(RuntimeError):
    """Writing one of *our own* artefacts failed (disk full, quota, permissions, read-only file
    system). Never a property of an input: a stage stops on it — non-zero exit, nothing marked done —
    and the rerun continues where it stopped."""


class ExecutorError(RuntimeError):
    """The executor could not finish the items (a worker died more often than allowed)."""


# (error, exit status, what the CLI adds after the message), first match wins
EXIT_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (ConfigError, 2, ""),
    (CatalogueError, 2, ""),
    (NonFiniteLoss, 3, ""),
    (OutputError, 4, ""),
    (ExecutorError, 1, "; rerun to continue"),
)
