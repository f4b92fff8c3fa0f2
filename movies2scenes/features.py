"""Per-shot feature arrays: one fp16 (M × d) ``.npy`` per movie + ``index.parquet``.

``ShotFeatures(run_dir / "shot_features").movie(movie_id)`` memory-maps one movie's matrix (rows in
shot order) without reading the others — random access per movie, as the movie encoder and the
miner need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def feature_file(movie_index: int) -> str:
    return f"features-{movie_index:06d}.npy"


class ShotFeatures:
    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        table = pq.read_table(self.dir / "index.parquet").to_pylist()
        self.rows = {r["movie_id"]: r for r in table}
        self.dim = int(table[0]["dim"]) if table else 0

    @property
    def movie_ids(self) -> list[str]:
        return list(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def num_shots(self, movie_id: str) -> int:
        return int(self.rows[movie_id]["num_shots"])

    def movie(self, movie_id: str) -> np.ndarray:
        """(M × d) float16, memory-mapped, rows in shot order."""
        if movie_id not in self.rows:
            raise KeyError(f"no features for movie {movie_id!r} in {self.dir}")
        return np.load(self.dir / self.rows[movie_id]["file"], mmap_mode="r", allow_pickle=False)
