"""Per-shot feature arrays: one fp16 (M × d) ``.npy`` per movie + ``index.parquet``.

``ShotFeatures(run_dir / "shot_features").movie(movie_id)`` memory-maps one movie's matrix (rows in
shot order) without reading the others — random access per movie, as the movie encoder and the
miner need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .catalogue import safe_name


def feature_file(movie_id: str) -> str:
    """The movie's array, named by its id (``catalogue.safe_name``), never by a catalogue row."""
    return f"features-{safe_name(movie_id)}.npy"


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


def write_movie_features(folder: str | Path, movie_id: str, matrix: np.ndarray) -> dict:
    """Write one movie's (M × d) array as fp16 (atomically) and return its index row."""
    from .store import atomic_path

    folder = Path(folder)
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"movie {movie_id!r}: shot features must be a non-empty (shots × dim) array, "
                         f"got shape {matrix.shape}")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / feature_file(movie_id)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, matrix.astype(np.float16), allow_pickle=False)
    return {"movie_id": movie_id, "file": feature_file(movie_id), "num_shots": int(matrix.shape[0]),
            "dim": int(matrix.shape[1])}


def write_index(folder: str | Path, rows: list[dict]) -> None:
    """``index.parquet`` of a shot-features folder from :func:`write_movie_features`'s rows."""
    import pyarrow as pa

    from .store import write_parquet

    rows = sorted(rows, key=lambda r: r["movie_id"])
    write_parquet(Path(folder) / "index.parquet", pa.table({
        "movie_id": pa.array([r["movie_id"] for r in rows], pa.string()),
        "file": pa.array([r["file"] for r in rows], pa.string()),
        "num_shots": pa.array([r["num_shots"] for r in rows], pa.int32()),
        "dim": pa.array([r["dim"] for r in rows], pa.int32()),
    }))
