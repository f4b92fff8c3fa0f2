"""Per-shot feature arrays: one fp16 (M × d) ``.npy`` per movie + ``index.parquet``.

``ShotFeatures(run_dir / "shot_features").movie(movie_id)`` memory-maps one movie's matrix (rows in
shot order) without reading the others — random access per movie, as the movie encoder and the
miner need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .catalogue import safe_name
from .integrity import verified


def feature_file(movie_id: str) -> str:
    """The movie's array, named by its id (``catalogue.safe_name``), never by a catalogue row."""
    return f"features-{safe_name(movie_id)}.npy"


class ShotFeatures:
    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        table = pq.read_table(verified(self.dir / "index.parquet")).to_pylist()
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
        return np.load(verified(self.dir / self.rows[movie_id]["file"]), mmap_mode="r", allow_pickle=False)


def clip_shots(clip) -> tuple[int, ...]:
    """A clip's shots in order: ``(movie, start, end)`` → start..end−1; ``(movie, shots)`` → shots."""
    return tuple(range(clip[1], clip[2])) if len(clip) == 3 else tuple(clip[1])


def clip_rows(movie_features, clip) -> np.ndarray:
    """(n, d) float32: a clip's shot features in the clip's order."""
    return np.asarray(movie_features(clip[0])[list(clip_shots(clip))], np.float32)


def clip_means(movie_features, clips) -> np.ndarray:
    """(clips, d) float32: per-shot features averaged over each clip's shots — the pooled baseline
    of evaluate and the quality bench. ``movie_features(movie_id)`` gives a movie's (M × d) rows
    (``ShotFeatures.movie`` or a dict's ``__getitem__``); ``clips`` are (movie, start, end) or
    (movie, shots). The mean is summed in shot-number order whatever the clip's order, so the same
    shots in another order give the very same bits (a mean cannot see order, to the last bit)."""
    return np.stack([np.asarray(movie_features(c[0])[sorted(clip_shots(c))], np.float32).mean(0) for c in clips])


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
    from .integrity import file_record

    name = feature_file(movie_id)
    return {"movie_id": movie_id, "file": name, "num_shots": int(matrix.shape[0]), "dim": int(matrix.shape[1]),
            "files": {name: file_record(folder / name)}}


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


# ----------------------------------------------------------------------------------------------
# shot features made elsewhere (CLIP, in-house models): checked, and mapped onto our shots


class FeatureImportError(ValueError):
    """An imported feature array that cannot be used; the message names the movie and the reason."""


def check_feature_matrix(matrix, movie_id: str, where: str = "") -> np.ndarray:
    """``matrix`` as a finite float32 (M × d) array, or :class:`FeatureImportError` naming the movie,
    the first bad row and the reason (wrong dtype, wrong shape, NaN / inf)."""
    where = f" ({where})" if where else ""
    a = np.asarray(matrix)
    if a.dtype.kind != "f":
        raise FeatureImportError(f"movie {movie_id!r}{where}: features must be floating point, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise FeatureImportError(f"movie {movie_id!r}{where}: features must be a non-empty (shots × dim) "
                                 f"array, got shape {a.shape}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise FeatureImportError(f"movie {movie_id!r}{where}: row {rows[0]} is not finite (NaN or inf)"
                                 + (f", and {len(rows) - 1} more row(s)" if len(rows) > 1 else ""))
    if np.abs(a).max() > np.finfo(np.float16).max:
        raise FeatureImportError(f"movie {movie_id!r}{where}: values beyond ±65504 do not fit the fp16 feature "
                                 "arrays; scale the features first")
    return a.astype(np.float32)


def align_by_time(features: np.ndarray, starts, ends, our_starts, our_ends, movie_id: str) -> np.ndarray:
    """Features of *our* shots from rows over the user's own shot table: each of our shots
    [s, e) gets the mean of the rows whose [start, end) overlaps it, weighted by the overlap in
    seconds. A shot that no row overlaps is an error naming it (the tables do not cover the same
    film). Both tables are in seconds; theirs must have end > start on every row."""
    starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    if len(starts) != len(features) or len(ends) != len(features):
        raise FeatureImportError(f"movie {movie_id!r}: {len(features)} feature rows but {len(starts)} start and "
                                 f"{len(ends)} end times")
    wrong = np.flatnonzero(~(np.isfinite(starts) & np.isfinite(ends) & (ends > starts)))
    if len(wrong):
        raise FeatureImportError(f"movie {movie_id!r}: row {wrong[0]} has start {starts[wrong[0]]} and end "
                                 f"{ends[wrong[0]]} (need finite times with end > start)")
    order = np.argsort(starts, kind="stable")
    starts, ends, features = starts[order], ends[order], features[order]
    reach = np.maximum.accumulate(ends)  # the latest end among rows sorted by start: a bound for the search
    out = np.empty((len(our_starts), features.shape[1]), np.float32)
    for i, (s, e) in enumerate(zip(our_starts, our_ends)):
        lo = int(np.searchsorted(reach, s, side="right"))  # rows before lo all end at or before s
        hi = int(np.searchsorted(starts, e, side="left"))  # rows from hi on all start at or after e
        w = np.clip(np.minimum(ends[lo:hi], e) - np.maximum(starts[lo:hi], s), 0, None)
        if not len(w) or w.sum() <= 0:
            raise FeatureImportError(f"movie {movie_id!r}: our shot {i} ({s:.3f}–{e:.3f} s) overlaps no row of "
                                     "the imported shot table")
        out[i] = (w[:, None] * features[lo:hi]).sum(0) / w.sum()
    return out


def read_source(path: Path, movie_id: str, shots: list[dict]) -> np.ndarray:
    """One movie's imported features as float32 rows aligned with our ``shots`` (index rows). Any
    problem of the file is a :class:`FeatureImportError` naming the movie and the file: it fails
    that movie, never the import."""
    try:
        return _read_source(path, movie_id, shots)
    except FeatureImportError:
        raise
    except (MemoryError, ValueError, TypeError, OSError, pa.ArrowException) as e:  # what a file can make us raise
        raise FeatureImportError(f"movie {movie_id!r} ({path.name}): cannot be read as shot features "
                                 f"({type(e).__name__}: {str(e)[:200]})") from None


def _read_npy(path: Path, movie_id: str) -> np.ndarray:
    """Memory-mapped first: a header declaring more data than the file holds is refused without
    allocating what it declares."""
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise FeatureImportError(f"movie {movie_id!r} ({path.name}): not a readable .npy array ({e})") from None
    return check_feature_matrix(matrix, movie_id, path.name)


def _time_column(table: pa.Table, name: str, path: Path, movie_id: str) -> np.ndarray:
    kind = table.schema.field(name).type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise FeatureImportError(f"movie {movie_id!r} ({path.name}): column {name!r} must hold numbers of seconds, "
                                 f"got {kind}")
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def _read_source(path: Path, movie_id: str, shots: list[dict]) -> np.ndarray:
    if path.suffix == ".npy":
        matrix = _read_npy(path, movie_id)
        times = None
    else:
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise FeatureImportError(f"movie {movie_id!r} ({path.name}): not a readable Parquet file ({e})") from None
        if table.num_rows == 0:
            raise FeatureImportError(f"movie {movie_id!r} ({path.name}): no rows")
        if "embedding" not in table.column_names:
            raise FeatureImportError(f"movie {movie_id!r} ({path.name}): no 'embedding' column "
                                     f"(columns: {', '.join(table.column_names)})")
        if "shot" in table.column_names:
            table = table.sort_by("shot")
            order = table.column("shot").to_numpy()
            if not np.array_equal(order, np.arange(len(order))):
                raise FeatureImportError(f"movie {movie_id!r} ({path.name}): the 'shot' column must number the "
                                         f"rows 0..{len(order) - 1}")
        kind = table.schema.field("embedding").type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) \
                or not pa.types.is_floating(kind.value_type):
            raise FeatureImportError(f"movie {movie_id!r} ({path.name}): 'embedding' must be a list of floats per "
                                     f"row, got {kind}")
        rows = table.column("embedding").to_pylist()
        lengths = {len(r) if r is not None else 0 for r in rows}
        if len(lengths) != 1:
            first = next(i for i, r in enumerate(rows) if (len(r) if r is not None else 0) != len(rows[0] or []))
            raise FeatureImportError(f"movie {movie_id!r} ({path.name}): row {first} has another length "
                                     "(every embedding needs the same dimension)")
        values = np.array(rows, np.float32)
        matrix = check_feature_matrix(values, movie_id, path.name)
        times = ((_time_column(table, "start_time", path, movie_id), _time_column(table, "end_time", path, movie_id))
                 if {"start_time", "end_time"} <= set(table.column_names) else None)
    if times is not None:
        return align_by_time(matrix, *times, [s["start_time"] for s in shots], [s["end_time"] for s in shots],
                             movie_id)
    if len(matrix) != len(shots):
        raise FeatureImportError(f"movie {movie_id!r} ({path.name}): {len(matrix)} rows, but the shots stage has "
                                 f"{len(shots)} shots (give start_time/end_time columns to map your own shot table)")
    return matrix
