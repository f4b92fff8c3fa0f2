"""Every file a stage leaves for later stages is recorded, and checked before it is used.

A finished stage's ``DONE.json`` lists its files under ``files``: name → ``[size, sha256]`` (shot
shards, feature arrays, scene-pair shards, the index and pair tables, movie-pair tables; model
files keep their own ``outputs`` record of sha256). Two checks read it:

* **presence and size** (a ``stat`` per file, no reading): the stage's own up-to-date check and the
  start of every stage that reads it. A deleted or truncated file makes the owning stage redo that
  movie or unit, and a later stage refuse to start, naming the file and the command that repairs it;
* **content** (the sha256 of what is read), once per process the first time a reader opens a
  file (:func:`verified`): a flipped byte is refused naming the file and the repairing command
  (``m2s <stage> --verify``: the owning stage hashes every file it recorded and redoes the movies or
  units whose files differ), never trained on or shown.

Records written by a movies2scenes older than these checks have no ``files``. Their files are
still checked where they are read (:func:`whole`: there, and not cut short — a feature array's size
against its header, a tar's end-of-archive blocks, a Parquet file's closing magic), and refused
with exit 2 naming the file; ``--verify`` on such a record redoes the stage, which records them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .layout import DONE, STAGES
from .store import read_json, sha256_file

COMMANDS = {s.folder: s.command for s in STAGES}


class DamagedArtefact(ConfigError):
    """A stage's file is missing, or is not the file the stage recorded (exit status 2, like any
    input that cannot be used). The message names the file and the command that repairs it."""


class DamagedRecord(DamagedArtefact):
    """A stage's ``DONE.json`` (or another record it wrote) that is not a valid record: not a file,
    not UTF-8 JSON, not an object, or a field of the wrong shape. Its owning stage takes it for "not
    done" and redoes; every other reader refuses, naming the file and the repairing command."""


def read_done(path: str | Path) -> dict:
    """The DONE record at ``path``, validated (:class:`DamagedRecord` otherwise): an object with
    string ``config_hash`` / ``input_hash``, and — where present — ``counts`` an object, ``outputs``
    name → sha256 strings, ``files`` name → [size, sha256]. Missing: FileNotFoundError."""
    path = Path(path)
    command = COMMANDS.get(path.parent.name, path.parent.name)

    def damaged(why: str) -> DamagedRecord:
        return DamagedRecord(f"{path}: not a valid {DONE} record ({why}); run `m2s {command} --force` "
                             "(the same config) to redo the stage")

    if path.is_dir():
        raise damaged("a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        rec = read_json(path)
    except (UnicodeDecodeError, ValueError) as e:
        raise damaged(f"not UTF-8 JSON: {type(e).__name__}") from None
    except OSError as e:
        raise damaged(f"unreadable: {e.strerror or e}") from None
    if not isinstance(rec, dict):
        raise damaged(f"a JSON {type(rec).__name__}, not an object")
    for key in ("config_hash", "input_hash"):
        if not isinstance(rec.get(key), str):
            raise damaged(f"{key} is not a string")
    shapes = {"counts": lambda v: isinstance(v, dict),
              "inputs": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
              "outputs": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
              "files": lambda v: isinstance(v, dict) and all(
                  isinstance(x, list) and len(x) == 2 and isinstance(x[0], int) and not isinstance(x[0], bool)
                  and x[0] >= 0 and isinstance(x[1], str) for x in v.values())}
    for key, ok in shapes.items():
        if rec.get(key) is not None and not ok(rec[key]):
            raise damaged(f"{key} has the wrong shape")
    return rec


def file_record(path: str | Path) -> list:
    """``[size, sha256]`` of a file a stage has just written, for its ``files`` record."""
    return [os.stat(path).st_size, sha256_file(path)]


def difference(path: Path, record: list, content: bool) -> str | None:
    """Why ``path`` is not the recorded file (missing, another size, other bytes), or None."""
    try:
        size = path.stat().st_size
    except OSError:
        return "is missing"
    if size != record[0]:
        return f"has {size} bytes where {record[0]} were written"
    if content and sha256_file(path) != record[1]:
        return "has other bytes than were written (sha256 differs)"
    return None


@dataclass
class StageFiles:
    """The recorded files of one finished stage folder."""

    folder: Path
    files: dict[str, list]  # name → [size, sha256]
    outputs: dict[str, str]  # model files: name → sha256
    repair: str  # the command that redoes the stage's damaged files

    @classmethod
    def of(cls, folder: str | Path, rec: dict | None = None) -> StageFiles:
        folder = Path(folder)
        if rec is None:
            rec = read_done(folder / DONE) if (folder / DONE).exists() else {}
        command = COMMANDS.get(folder.name, folder.name)
        if rec.get("imported_from"):
            repair = f"m2s import-shot-features {rec['imported_from']} --verify"
        else:
            repair = f"m2s {command} --verify (the same config)"
        return cls(folder, dict(rec.get("files") or {}), dict(rec.get("outputs") or {}), repair)

    def damaged(self, content: bool = False) -> list[tuple[str, str]]:
        """(name, why) of every recorded file that is missing or differs: per-item files and tables
        by size (by sha256 too with ``content``); model files always by sha256 (few, and small next
        to the shards)."""
        out = [(name, why) for name, record in sorted(self.files.items())
               if (why := difference(self.folder / name, record, content))]
        for name, digest in sorted(self.outputs.items()):
            f = self.folder / name
            if not f.is_file():
                out.append((name, "is missing"))
            elif sha256_file(f) != digest:
                out.append((name, "has other bytes than were written (sha256 differs)"))
        return out

    def refuse(self, damaged: list[tuple[str, str]]) -> DamagedArtefact:
        shown = "; ".join(f"{self.folder / n} {why}" for n, why in damaged[:5])
        more = f" (and {len(damaged) - 5} more)" if len(damaged) > 5 else ""
        return DamagedArtefact(f"{shown}{more}: not what {self.folder.name} recorded in its {DONE} (damaged, "
                               f"deleted or replaced since); run `{self.repair}` to redo what they hold")

    def check_present(self) -> None:
        """Refuse unless every recorded file is there with its size (and every model file intact)."""
        damaged = self.damaged(content=False)
        if damaged:
            raise self.refuse(damaged)


class Verifier:
    """The content check of the files a process reads from other stages' folders: each file is
    hashed once per process (again only if it changes on disk)."""

    def __init__(self):
        self.records: dict[Path, tuple[int, StageFiles]] = {}  # folder → (DONE.json mtime, its files)
        self.seen: set[tuple] = set()

    def stage(self, folder: Path) -> StageFiles | None:
        done = folder / DONE
        try:
            mtime = done.stat().st_mtime_ns
        except OSError:
            return None  # not a finished stage: nothing recorded to compare with
        cached = self.records.get(folder)
        if cached is None or cached[0] != mtime:
            cached = self.records[folder] = (mtime, StageFiles.of(folder))
        return cached[1]

    def __call__(self, path: str | Path) -> Path:
        path = Path(path)
        files = self.stage(path.parent)
        record = files.files.get(path.name) if files else None
        if record is None:  # not a recorded file (or a record older than these checks)
            try:
                st = path.stat()
            except OSError:
                st = None
            key = (str(path), st and st.st_size, st and st.st_mtime_ns, None)
            if key not in self.seen:
                why = whole(path)
                if why:
                    raise (files or StageFiles.of(path.parent, {})).refuse([(path.name, why)])
                self.seen.add(key)
            return path
        try:
            st = path.stat()
        except OSError:
            raise files.refuse([(path.name, "is missing")]) from None
        key = (str(path), st.st_size, st.st_mtime_ns, record[1])
        if key not in self.seen:
            why = difference(path, record, content=True)
            if why:
                raise files.refuse([(path.name, why)])
            self.seen.add(key)
        return path


def whole(path: Path) -> str | None:
    """Why a file that has no record (a stage older than the records) cannot be what its writer
    left — missing, or cut short by the measure its format gives — or None. No content check."""
    try:
        size = path.stat().st_size
    except OSError:
        return "is missing"
    try:
        with open(path, "rb") as f:
            if path.suffix == ".npy":
                import numpy as np

                version = np.lib.format.read_magic(f)
                fmt = np.lib.format
                shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
                need = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                return f"has {size} bytes where its header needs {need} (cut short)" if size < need else None
            if path.suffix == ".tar":
                f.seek(max(0, size - 1024))
                ok = size >= 1024 and size % 512 == 0 and f.read(1024) == bytes(1024)
                return None if ok else f"is not a whole tar archive ({size} bytes, no end-of-archive blocks)"
            if path.suffix == ".parquet":
                f.seek(max(0, size - 4))
                return None if size >= 12 and f.read(4) == b"PAR1" else "is not a whole Parquet file (cut short)"
    except (OSError, ValueError) as e:
        return f"cannot be read ({type(e).__name__}: {e})"
    return None


verified = Verifier()  # this process's content checks; `verified(path)` before reading a stage's file
