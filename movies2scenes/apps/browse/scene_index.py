"""The scene index of ``m2s browse``, built once into the run and grown with it.

Every window of n shots of every movie is embedded by the exported encoder; at 10⁴ titles that is
hours, so browse must not redo it at every start. :class:`SceneIndexCache` keeps each movie's
window embeddings in ``RUN/browse_index/<movie>-<stamp>.npy``. The stamp hashes what the
embeddings depend on — the exported model (its sha256 in export/DONE.json), n, the stride, and the
movie's shot shard (size and sha256 in shots/DONE.json) — so a re-exported encoder or a re-detected
movie is embedded again, a movie added to the catalogue is embedded alone, and the rest is read back
in milliseconds. Files are written atomically; a run directory that cannot be written is fine (the
embeddings then live in memory only, as before).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from movies2scenes.integrity import read_done
from movies2scenes.catalogue import safe_name
from movies2scenes.store import OutputError, atomic_path


class SceneIndexCache:
    """Per-movie window embeddings of one exported encoder (float32, un-normalised, window order)."""

    def __init__(self, layout, n: int, stride: int):
        """``layout``: the run's :class:`movies2scenes.layout.RunLayout`."""
        self.folder = layout.browse_index
        export, shots = (read_done(layout.done(s)) for s in ("export", "shots"))
        self.base = json.dumps([export.get("outputs", {}), n, stride], sort_keys=True)
        self.shards = shots.get("files", {})
        self.writable = True

    def stamp(self, movie_id: str, shard: str) -> str:
        """What this movie's embeddings depend on, hashed (a shard without a record: never cached)."""
        record = self.shards.get(shard)
        if record is None:
            return ""
        return hashlib.sha256(json.dumps([self.base, movie_id, record]).encode()).hexdigest()[:16]

    def path(self, movie_id: str, stamp: str) -> Path:
        return self.folder / f"{safe_name(movie_id)}-{stamp}.npy"

    def load(self, movie_id: str, stamp: str, windows: int) -> np.ndarray | None:
        """The movie's embeddings if cached for this stamp and of ``windows`` rows, else None."""
        if not stamp:
            return None
        try:
            emb = np.load(self.path(movie_id, stamp), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return emb if emb.ndim == 2 and len(emb) == windows and emb.dtype == np.float32 else None

    def save(self, movie_id: str, stamp: str, emb: np.ndarray) -> None:
        """Keep the movie's embeddings (and drop its older stamps); a read-only run keeps nothing."""
        if not stamp or not self.writable:
            return
        path = self.path(movie_id, stamp)
        try:
            with atomic_path(path) as tmp:  # makes the folder
                with open(tmp, "wb") as f:
                    np.save(f, np.ascontiguousarray(emb, np.float32), allow_pickle=False)
            for old in self.folder.glob(f"{safe_name(movie_id)}-*.npy"):
                if old != path:
                    old.unlink(missing_ok=True)
        except (OSError, OutputError) as e:
            self.writable = False
            print(f"m2s browse: cannot keep the scene index in {self.folder} ({getattr(e, 'strerror', None) or e}); "
                  "it lives in memory for this session")
