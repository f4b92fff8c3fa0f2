"""Artefact I/O: atomic writes, webdataset shot shards, parquet tables, file fingerprints.

Nothing half-written is ever taken for done: every file is written under a temporary name in the
same folder and renamed into place (``os.replace`` is atomic on POSIX) only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError

TMP_PREFIX = ".tmp-"


def output_error(path: str | Path, e: OSError) -> OutputError:
    if Path(path).is_dir() and not Path(path).is_symlink():  # os.replace onto a folder: EISDIR / ENOTEMPTY
        return OutputError(f"cannot write {path}: a folder is where this file belongs (a stage never makes one "
                           "there); move the folder away and rerun to continue; nothing was marked done")
    return OutputError(f"cannot write {path}: {e.strerror or e} (errno {e.errno}); nothing was marked "
                       "done: free space / fix permissions and rerun to continue")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.
    An OSError in the block or the rename (the block writes ``tmp``) becomes :class:`OutputError`."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise output_error(path, e) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def finite_json(data: Any) -> Any:
    """``data`` with every NaN/inf float replaced by None: JSON has no NaN (``NaN`` in a file is
    not valid JSON and most readers reject it), so "no value" is written as ``null``."""
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def write_json(path: str | Path, data: Any) -> None:
    """Valid JSON only (non-finite numbers become null, see :func:`finite_json`), written atomically."""
    text = json.dumps(finite_json(data), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_part(path: str | Path) -> dict | None:
    """A per-item part record (JSON object), or None when there is none or it cannot be read (a
    damaged part is an item to redo, never an error)."""
    try:
        rec = read_json(path)
    except (OSError, ValueError):  # missing, not UTF-8, not JSON
        return None
    return rec if isinstance(rec, dict) else None


def write_parquet(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def check_output(path: str | Path, inputs: Iterable[str | Path], ours, what: str, force: bool = False) -> None:
    """Refuse (ConfigError) an output path that would destroy what the command did not make: one of
    its ``inputs`` (a file, or any file inside an input folder), or an existing file that ``ours(path)``
    does not recognise as this command's own kind of output (``what``). ``force`` allows both."""
    from .errors import ConfigError

    out = Path(path)
    if force or not (out.exists() or out.is_symlink()):
        return
    target = out.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if target == src or src in target.parents:
            raise ConfigError(f"{out} is an input of this command ({item}); writing there would destroy it: "
                              "choose another output path")
    if not ours(out):
        raise ConfigError(f"{out} exists and is not {what}; it was not made by this command, so it is left "
                          "alone: choose another output path, or --force to replace it")


def remove_stale_tmp(folder: str | Path) -> int:
    """Delete the temporary files and folders a killed run left anywhere under ``folder``; returns
    how many. Only call it while no other process writes there (the stage lock, held exclusively)."""
    import shutil

    n = 0
    for p in sorted(Path(folder).rglob(f"{TMP_PREFIX}*"), key=lambda p: -len(p.parts)):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_kind(path: str | Path) -> str | None:
    """None for a regular file (links followed); else what it is, for messages — never opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def file_fingerprint(path: str | Path, chunk: int = 1 << 16) -> str:
    """Cheap content fingerprint: size + first and last 64 KiB (hashing whole movies is too slow).
    Only regular files are opened: a FIFO or device would block or never end (ValueError)."""
    path = Path(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"not a regular file: {path}")
    size = st.st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# webdataset shards


class _SourceFailed(Exception):
    """Carries an exception raised by the *samples* iterator through ``atomic_path`` unchanged
    (it is about the input, not about writing)."""


def write_shards(path: str | Path, samples: Iterable[dict[str, Any]]) -> int:
    """Write samples (``__key__`` + ext → bytes / dict / ndarray) to one tar shard, atomically and
    byte-deterministically (fixed mtime/owner), with webdataset's TarWriter. Returns the count.
    An error raised while *making* a sample propagates as it is; an OSError while *writing* is
    :class:`OutputError`."""
    import webdataset as wds

    n = 0
    it = iter(samples)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                writer = wds.TarWriter(f, user="m2s", group="m2s", mtime=0.0, encoder=_encode)
                try:
                    while True:
                        try:
                            sample = next(it)
                        except StopIteration:
                            break
                        except Exception as e:
                            raise _SourceFailed() from e
                        writer.write(sample)
                        n += 1
                    writer.close()
                except BaseException:
                    # the file is abandoned: the tar must not try to finish it from __del__ later
                    # (a write to the closed file, printed as an ignored exception)
                    tar = getattr(writer, "tarstream", None)
                    for part in (tar, getattr(tar, "fileobj", None)):  # the TarFile and its "w|" _Stream
                        if part is not None and hasattr(part, "closed"):
                            part.closed = True
                    raise
    except _SourceFailed as e:
        raise e.__cause__ from None
    return n


def _encode(sample: dict[str, Any]) -> dict[str, bytes]:
    out = {}
    for k, v in sample.items():
        if k.startswith("__"):
            out[k] = v
        elif isinstance(v, bytes):
            out[k] = v
        elif k.endswith("json"):
            out[k] = json.dumps(v, sort_keys=True, ensure_ascii=False).encode()
        elif k.endswith("npy"):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(v), allow_pickle=False)
            out[k] = buf.getvalue()
        else:
            raise TypeError(f"cannot encode field {k!r} of type {type(v).__name__}")
    return out


def iter_tar(path: str | Path) -> Iterator[dict[str, bytes]]:
    """Samples of one shard in file order (``__key__`` + extension → bytes), read sequentially
    by webdataset."""
    import webdataset as wds

    # no node/worker splitting: the caller decides who reads which shard (webdataset would
    # otherwise hand this one file to one DataLoader worker / one rank only)
    for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False, nodesplitter=None,
                                 workersplitter=None):
        yield {k: v for k, v in sample.items() if k not in ("__url__", "__local_path__")}


class TarIndex:
    """Random access to the members of an uncompressed tar shard: one pass over its headers (the
    data is skipped, not read), then ``name → (offset, size)``; ``read`` seeks straight to the
    bytes. Names are only ever looked up in this table, so no caller-supplied name reaches the
    file system."""

    def __init__(self, path: str | Path):
        import tarfile

        self.path = Path(path)
        self.members: dict[str, tuple[int, int]] = {}
        with tarfile.open(self.path, "r:") as tar:
            for m in tar:
                if m.isfile():
                    self.members[m.name] = (m.offset_data, m.size)

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str) -> bytes:
        offset, size = self.members[name]  # KeyError for a name the shard does not hold
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"{self.path}: member {name!r} truncated ({len(data)} of {size} bytes)")
        return data


def decode_keyframes(sample: dict[str, bytes]) -> np.ndarray:
    """(k, H, W, 3) uint8 RGB keyframes of one shot sample (jpg or npy storage)."""
    if "frames.npy" in sample:
        return np.load(io.BytesIO(sample["frames.npy"]), allow_pickle=False)
    import cv2

    names = sorted((k for k in sample if k.endswith(".jpg")), key=lambda k: int(k.split(".")[0]))
    frames = [cv2.imdecode(np.frombuffer(sample[k], np.uint8), cv2.IMREAD_COLOR) for k in names]
    return np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])


# ----------------------------------------------------------------------------------------------
# paired-scene samples (scene_pairs/scenes-NNNNNN.tar)


def scene_fields(side: str, shot_samples: list[dict[str, bytes]]) -> dict[str, bytes]:
    """The stored keyframe fields of a scene's shots, renamed ``<side><s:03d>.<field>`` (no
    re-encoding: jpg stays jpg, npy stays npy)."""
    out = {}
    for s, sample in enumerate(shot_samples):
        for name, value in sample.items():
            if name.endswith(".jpg") or name == "frames.npy":
                out[f"{side}{s:03d}.{name}"] = value
    return out


def decode_scene(sample: dict[str, bytes], side: str) -> np.ndarray:
    """(n, k, H, W, 3) uint8 RGB keyframes of one side ('a' or 'b') of a paired-scene sample."""
    shots: dict[int, dict[str, bytes]] = {}
    for name, value in sample.items():
        if name.startswith(side) and name[1:4].isdigit() and name[4:5] == ".":
            shots.setdefault(int(name[1:4]), {})[name[5:]] = value
    if not shots:
        raise KeyError(f"sample {sample.get('__key__')!r} has no scene {side!r}")
    return np.stack([decode_keyframes(shots[s]) for s in sorted(shots)])
