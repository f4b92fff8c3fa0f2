"""The scene index of ``m2s browse``, built once into the run and grown with it.

Every window of n shots of every movie is embedded by the exported encoder; at 10⁴ titles that is
hours, so browse must not redo it at every start. :class:`SceneIndexCache` keeps each movie's
window embeddings in ``RUN/browse_index/<movie>-<stamp>.npy``. The stamp hashes what the
embeddings depend on — the exported model (its sha256 in export/DONE.json), n, the stride, and the
movie's shot shard (size and sha256 in shots/DONE.json) — so a re-exported encoder or a re-detected
movie is embedded again, a movie added to the catalogue is embedded alone, and the rest is read back
in milliseconds. Files are written atomically; a run directory that cannot be written is fine (the
embeddings then live in memory only, as before).

A kept file is trusted only as far as it proves itself (issue 41 class 3): its name carries the
sha256 of its own bytes (``<movie>-<stamp>-<digest>.npy``), checked on every read, and its array
must be float32, of the expected rows and width, and finite — an edited value, a NaN row or a file
of another encoder's width is embedded again, never served.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np

from movies2scenes.integrity import read_done
from movies2scenes.catalogue import safe_name
from movies2scenes.errors import OutputError
from movies2scenes.store import atomic_path


class SceneIndexCache:
    """Per-movie window embeddings of one exported encoder (float32, un-normalised, window order)."""

    def __init__(self, layout, n: int, stride: int):
        """``layout``: the run's :class:`movies2scenes.layout.RunLayout`."""
        self.folder = layout.browse_index
        export, shots = (read_done(layout.done(s)) for s in ("export", "shots"))
        self.base = json.dumps([export.get("outputs", {}), n, stride], sort_keys=True)
        self.shards = shots.get("files", {})
        self.writable = True
        self.kept: dict[str, list[str]] = {}  # a movie's safe name → its kept files (one listing, not one per movie)
        for name in (sorted(p.name for p in self.folder.glob("*.npy")) if self.folder.is_dir() else []):
            parts = name[:-4].rsplit("-", 2)
            if len(parts) == 3:
                self.kept.setdefault(parts[0], []).append(name)

    def stamp(self, movie_id: str, shard: str) -> str:
        """What this movie's embeddings depend on, hashed (a shard without a record: never cached)."""
        record = self.shards.get(shard)
        if record is None:
            return ""
        return hashlib.sha256(json.dumps([self.base, movie_id, record]).encode()).hexdigest()[:16]

    def load(self, movie_id: str, stamp: str, windows: int, dim: int | None = None) -> np.ndarray | None:
        """The movie's embeddings if kept for this stamp, their bytes those the name records, of
        ``windows`` rows (``dim`` wide) and finite; else None (embedded again)."""
        if not stamp:
            return None
        for name in self.kept.get(safe_name(movie_id), []):
            if not name.startswith(f"{safe_name(movie_id)}-{stamp}-"):
                continue
            try:
                data = (self.folder / name).read_bytes()
                if hashlib.sha256(data).hexdigest()[:16] != name[:-4].rsplit("-", 1)[1]:
                    continue  # edited since it was written
                emb = np.load(io.BytesIO(data), allow_pickle=False)
            except (OSError, ValueError):
                continue
            if (emb.ndim == 2 and len(emb) == windows and emb.dtype == np.float32
                    and (dim is None or emb.shape[1] == dim) and np.isfinite(emb).all()):
                return emb
        return None

    def save(self, movie_id: str, stamp: str, emb: np.ndarray) -> None:
        """Keep the movie's embeddings (and drop its other files); a read-only run keeps nothing."""
        if not stamp or not self.writable:
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(emb, np.float32), allow_pickle=False)
        data = buf.getvalue()
        safe = safe_name(movie_id)
        name = f"{safe}-{stamp}-{hashlib.sha256(data).hexdigest()[:16]}.npy"
        try:
            with atomic_path(self.folder / name) as tmp:  # makes the folder
                tmp.write_bytes(data)
            for old in self.kept.get(safe, []):  # this movie's alone: never another id that starts alike
                if old != name:
                    (self.folder / old).unlink(missing_ok=True)
            self.kept[safe] = [name]
        except (OSError, OutputError) as e:
            self.writable = False
            print(f"m2s browse: cannot keep the scene index in {self.folder} ({getattr(e, 'strerror', None) or e}); "
                  "it lives in memory for this session")
