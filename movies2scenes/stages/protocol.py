"""What every stage shares: upstream hashes, the stage lock, DONE.json (with the hashes of the
stage's final files), and which movies this process handles."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movies2scenes import __version__
from movies2scenes.catalogue import safe_name
from movies2scenes.layout import DONE, TRAINING_FOLDERS
from movies2scenes.errors import ConfigError
from movies2scenes.integrity import COMMANDS, DamagedRecord, StageFiles, read_done
from movies2scenes.store import output_error, read_part, sha256_file, write_json, write_parquet


@dataclass(frozen=True)
class Slot:
    """This process's share of a data-parallel stage: items with ``index % world == rank``."""

    rank: int = 0
    world: int = 1
    state: Any = None  # accelerate.PartialState under `accelerate launch`/torchrun, else None

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def process_slot(shard: str | None = None) -> Slot:
    """``--shard i/n`` (job arrays) wins; else Accelerate's process index when launched by
    ``accelerate launch``/torchrun (WORLD_SIZE > 1); else a single process."""
    if shard:
        rank, world = parse_shard(shard)
        return Slot(rank, world)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=True)
        return Slot(state.process_index, state.num_processes, state)
    return Slot()


def record_stamp(rec: dict) -> str:
    """What a later stage takes from a DONE record: its config and input hashes and the sha256 of
    its model files (what :func:`stage_input_hash` hashes), as one short stamp."""
    blob = json.dumps([rec["config_hash"], rec["input_hash"], rec.get("outputs") or {}], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def upstream_stamps(run_root: Path, folders) -> dict[str, str]:
    """Stage folder → :func:`record_stamp` of its DONE record now, for the ones that are done:
    recorded as ``inputs`` in the DONE record of the stage that reads them."""
    out = {}
    for folder in folders:
        done = run_root / folder / DONE
        if done.is_file():
            out[folder] = record_stamp(read_done(done))
    return out


def stale_inputs(stage_dir: Path, rec: dict) -> list[str]:
    """The upstream folders whose record is no longer the one this stage was built from (a record
    older than ``inputs`` says nothing: never stale)."""
    stale = []
    for folder, stamp in sorted((rec.get("inputs") or {}).items()):
        try:
            now = record_stamp(read_done(stage_dir.parent / folder / DONE))
        except (OSError, DamagedRecord):
            now = None
        if now != stamp:
            stale.append(folder)
    return stale


# a model trained on an older catalogue is still a model (adding a title re-extracts only its features
# with the same E_shot: tests/test_incremental.py); data built from older inputs is not (issue 42)
MODEL_FOLDERS = frozenset({*TRAINING_FOLDERS, "export"})


def stage_input_hash(*done_files: Path) -> str:
    """Hash of the upstream stages' DONE records (their config and input hashes, and the hashes of
    their final files), or a ConfigError naming the first upstream stage that is not done, that is
    stale data (built from another record of its own inputs than the run holds now: issue 42; a
    stale *model* — :data:`MODEL_FOLDERS` — is still read, and ``m2s summary`` marks it), or whose
    recorded files are not all there with their sizes (``integrity.StageFiles``)."""
    h = hashlib.sha256()
    for f in done_files:
        if not f.exists():
            raise ConfigError(f"{f.parent.name} is not done ({f} missing): run that stage first")
        rec = read_done(f)  # a damaged record: DamagedRecord naming it and the command that redoes it
        stale = stale_inputs(f.parent, rec) if f.parent.name not in MODEL_FOLDERS else []
        if stale:
            raise ConfigError(f"{f.parent.name} is stale: it was built from other {', '.join(stale)} than the run "
                              f"holds now; rerun `m2s {COMMANDS.get(f.parent.name, f.parent.name)}` (the same "
                              "config) first")
        h.update(f"{rec['config_hash']}:{rec['input_hash']}".encode())
        StageFiles.of(f.parent, rec).check_present()
        if rec.get("outputs"):
            h.update(json.dumps(rec["outputs"], sort_keys=True).encode())
    return h.hexdigest()[:16]


def init_stamp(init: str) -> str:
    """The part of a training stage's input hash that a starting-weights file contributes: its
    sha256 (a replaced file retrains), nothing for ``random`` / ``shot_encoder``."""
    from ..pretrained import MissingWeights, weights_path

    if init in ("random", "shot_encoder"):
        return ""
    try:
        path = weights_path(init)
    except MissingWeights as e:
        raise ConfigError(f"init={init!r}: {e}") from None
    if not path.is_file():
        raise ConfigError(f"init={init!r}: expected random, shot_encoder (scene encoder), a shipped name or a "
                          "weights file; no such file")
    return ":init=" + sha256_file(path)[:16]


# ----------------------------------------------------------------------------------------------
# one writer per stage directory


class StageLocked(ConfigError):
    """Another process is writing this stage directory."""


LOCK_NAME = ".lock"


@dataclass
class StageLock:
    """Held while a stage writes its folder. ``exclusive``: no other process of any launch may be
    in the folder (a single-process run), so leftovers such as ``.tmp-*`` files are stale."""

    exclusive: bool


def _holder_info() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "command": " ".join(sys.argv[:3])})


def _lock_fd(path: Path, exclusive: bool) -> int | None:
    """An fd holding flock on ``path`` (created if needed), or None when it is held elsewhere."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only run dir, permissions: we cannot write here
        raise output_error(path, e) from e
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # no locks on this file system
            print(f"warning: {path}: the file system does not support locks ({e.strerror}); concurrent "
                  "runs on this folder are not detected", file=sys.stderr)
            return fd
        os.close(fd)
        raise output_error(path, e) from e
    return fd


def _write_info(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (_holder_info() + "\n").encode(), 0)


def _held_by(stage_dir: Path) -> str:
    """Who holds the stage's locks, from the lock files of holders that still hold them: the slot
    locks of a launch if any is held (``.lock`` then holds only an older single run's details),
    else ``.lock``'s."""
    import fcntl

    found = []
    slots = sorted(stage_dir.glob(f"{LOCK_NAME}.*"))
    for p in slots + [stage_dir / LOCK_NAME]:
        if p.name == LOCK_NAME and found:
            break
        fd = os.open(p, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds this one
        except BlockingIOError:
            text = p.read_text(errors="replace").strip()
            try:
                info = json.loads(text)
                found.append(f"pid {info['pid']} on {info['host']} since {info['since']} ({info['command']})")
            except (json.JSONDecodeError, KeyError, TypeError):
                found.append(f"a process that left no details in {p.name}")
        finally:
            os.close(fd)
    return "; ".join(dict.fromkeys(found)) or "another process"


@contextlib.contextmanager
def stage_lock(stage_dir: Path, shard: str | None = None):
    """Take the lock of ``stage_dir`` for this process, or raise :class:`StageLocked` naming the holder.

    A single process takes ``.lock`` exclusively. The processes of one launch (``--shard i/n`` job
    arrays, ``accelerate launch``/torchrun ranks) share ``.lock`` and each takes ``.lock.<i>`` for its
    own slot, so two launches doing the same slot, or a single run beside a launch, are refused.
    Locks are ``flock`` locks: the kernel drops them when the holder dies, so a killed run never
    leaves a stale lock (the file stays, with the last holder's pid/host for messages)."""
    try:
        stage_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(stage_dir, e) from e
    if shard:
        rank, world = parse_shard(shard)
    else:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    exclusive = world == 1 and not shard
    fds = []
    try:
        fd = _lock_fd(stage_dir / LOCK_NAME, exclusive)
        if fd is not None:
            fds.append(fd)
            if not exclusive:
                fd = _lock_fd(stage_dir / f"{LOCK_NAME}.{rank}", True)
                if fd is not None:
                    fds.append(fd)
        if fd is None:
            raise StageLocked(f"{stage_dir} is being written by {_held_by(stage_dir)}; wait for it to "
                              "finish (a killed run releases its lock at once), or use another run_dir")
        _write_info(fds[-1])
        yield StageLock(exclusive)
    finally:
        for fd in reversed(fds):
            os.close(fd)  # releases the flock


# ----------------------------------------------------------------------------------------------
# per-movie files: named by the movie's id, never by a catalogue row


def part_name(movie_id: str) -> str:
    """A per-movie stage's record ``parts/<ID>.json`` (ID: ``catalogue.safe_name``)."""
    return f"{safe_name(movie_id)}.json"


class Parts:
    """A per-item stage's part records, ``<stage>/parts/<key>.json``: one per item, written after the
    item's own files (the completion marker a resumed run reads), pruned to the items of the merge.
    A record that cannot be read is an item to redo, never an error."""

    suffix = ".json"
    pattern = "*.json"  # what prune may remove

    def __init__(self, out: Path):
        self.folder = Path(out) / "parts"

    def name(self, key) -> str:
        return part_name(str(key))

    def path(self, key) -> Path:
        return self.folder / self.name(key)

    def read(self, key) -> dict | None:
        return read_part(self.path(key))

    def write(self, key, record) -> None:
        write_json(self.path(key), record)

    def prune(self, keys) -> None:
        """Remove the records of items that are no longer the stage's (titles that left the catalogue)."""
        prune(self.folder, self.pattern, {self.name(k) for k in keys})


class TableParts(Parts):
    """Part records that are Parquet tables (an item's rows), ``parts/<key:06d>.parquet``, whose schema
    metadata holds the record's ``stamp`` and ``files`` (name → [size, sha256]); ``read`` gives those two."""

    suffix = ".parquet"
    pattern = "*"  # records of an older format too

    def name(self, key) -> str:
        return f"{int(key):06d}{self.suffix}"

    def read(self, key) -> dict | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(self.path(key)).metadata or {}
            return {"stamp": meta[b"stamp"].decode(), "files": json.loads(meta[b"files"])}
        except (OSError, pa.ArrowException, KeyError, ValueError):
            return None

    def write(self, key, record) -> None:
        write_parquet(self.path(key), record)


def prune(folder: Path, pattern: str, keep: set[str]) -> None:
    """Remove the files matching ``pattern`` in ``folder`` whose names are not in ``keep`` (the
    per-movie files of titles that left the catalogue or failed)."""
    for p in folder.glob(pattern):
        if p.name not in keep:
            p.unlink()


def done_record(stage_dir: Path) -> dict | None:
    """The stage's own DONE record, or None when there is none — or it is damaged (the owning stage
    then redoes what it records, saying so)."""
    path = stage_dir / DONE
    try:
        return read_done(path)
    except FileNotFoundError:
        return None
    except DamagedRecord as e:
        print(f"{stage_dir.name}: {str(e).split(' run `')[0]} taken for not done; redoing", file=sys.stderr)
        return None


def is_done(stage_dir: Path, config_hash: str, input_hash: str, content: bool = False) -> bool:
    """DONE.json matches the config and inputs, and every file it records is there unchanged: by
    size (by sha256 with ``content``, i.e. ``--verify``); model files always by sha256."""
    rec = done_record(stage_dir)
    if not (rec and rec.get("config_hash") == config_hash and rec.get("input_hash") == input_hash):
        return False
    if content and "files" not in rec:  # written before file records: nothing to verify against
        print(f"{stage_dir.name}: {stage_dir / DONE} was written before files were recorded; --verify "
              "redoes the stage to record them", file=sys.stderr)
        return False
    damaged = StageFiles.of(stage_dir, rec).damaged(content)
    for name, why in damaged[:5]:
        print(f"{stage_dir.name}: {stage_dir / name} {why}; redoing what it holds", file=sys.stderr)
    if len(damaged) > 5:
        print(f"{stage_dir.name}: ... and {len(damaged) - 5} more damaged or missing file(s)", file=sys.stderr)
    return not damaged


def write_done(stage_dir: Path, stage: str, config_hash: str, input_hash: str,
               counts: dict, started: float, outputs: list[str] = (), files: dict | None = None,
               inputs: dict | None = None, **extra) -> dict:
    """DONE.json; ``outputs`` (model files under ``stage_dir``) are recorded with their sha256,
    ``files`` (name → [size, sha256], the files later stages read) as given; :func:`is_done` and
    the stages that read them check both (``movies2scenes.integrity``). ``inputs``: the upstream
    records it was built from (:func:`upstream_stamps`), for :func:`stale_inputs`."""
    rec = {
        "stage": stage,
        "config_hash": config_hash,
        "input_hash": input_hash,
        "inputs": dict(sorted((inputs or {}).items())),
        "counts": counts,
        "outputs": {name: sha256_file(stage_dir / name) for name in outputs},
        "files": dict(sorted((files or {}).items())),
        "elapsed_s": round(time.time() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "movies2scenes": __version__,
        "python": platform.python_version(),
        **extra,
    }
    write_json(stage_dir / DONE, rec)
    return rec


# ----------------------------------------------------------------------------------------------
# what pretraining saw (the evaluation leakage guard checks task movies against this record)

PRETRAINING_FILE = "pretraining_movies.json"


def write_pretraining_movies(stage_dir: Path, movie_ids) -> dict:
    """``stage_dir/pretraining_movies.json``: the exact movies a training stage learned from (sorted
    ids, count, sha256 of the list). Returns {count, sha256} for DONE.json."""
    ids = sorted(set(movie_ids))
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    write_json(stage_dir / PRETRAINING_FILE, {"count": len(ids), "sha256": digest, "movies": ids})
    return {"count": len(ids), "sha256": digest}


def read_pretraining_movies(path: Path) -> set[str]:
    """The movie ids of a ``pretraining_movies.json``, checked against its own count and hash."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
        ids = rec["movies"]
        ok = (isinstance(ids, list) and all(isinstance(m, str) for m in ids) and rec["count"] == len(ids)
              and rec["sha256"] == hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(f"{path}: not a valid record of pretraining movies (missing, damaged or edited); "
                          "rerun the stage that wrote it with --force")
    return set(ids)
