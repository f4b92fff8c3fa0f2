"""``m2s import-shot-features SOURCE``: shot features made elsewhere (CLIP, in-house models) →
run_dir/shot_features/, a stage that train-movie-encoder, mine-scene-pairs and evaluate's
baseline read exactly like extract-shot-features' own (fp16 arrays, index.parquet, DONE.json).

SOURCE is a folder with one file per movie, named by the movie's id (``catalogue.safe_name``):

* ``<ID>.npy`` — a float (shots × dim) array, one row per shot of our ``shots/index.parquet``;
* ``<ID>.parquet`` — a column ``embedding`` (a list of floats per row) and either one row per our
  shot (optionally a ``shot`` column giving the order) or the user's own shot table in
  ``start_time`` / ``end_time`` (seconds): each of our shots then gets the overlap-weighted mean
  of the rows it overlaps (``features.align_by_time``).

A movie whose file is missing, has a different number of rows, a non-float dtype, a NaN row or
another dimension than the rest is a failure naming the movie, the file and the reason
(``failures.jsonl``); every other movie is imported and the stage is done with them (exit status
1 says some failed). Files of movies the shots stage does not hold are reported and ignored. The
stage's config hash is the source files' sha256, so replacing a file re-imports; extract-shot-
features refuses to overwrite imported features without ``--force``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from movies2scenes.catalogue import safe_name
from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.features import (
    FeatureImportError,
    align_by_time,
    check_feature_matrix,
    feature_file,
    write_index,
    write_movie_features,
)
from movies2scenes.progress import progress
from movies2scenes.store import atomic_path, remove_stale_tmp, sha256_file

from ._stage import is_done, prune, stage_input_hash, stage_lock, write_done

STAGE = "extract_shot_features"  # downstream stages read it as the shot_features stage it replaces


def read_source(path: Path, movie_id: str, shots: list[dict]) -> np.ndarray:
    """One movie's imported features as float32 rows aligned with our ``shots`` (index rows)."""
    if path.suffix == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise FeatureImportError(f"movie {movie_id!r} ({path.name}): not a readable .npy array ({e})") from None
        matrix = check_feature_matrix(matrix, movie_id, path.name)
        times = None
    else:
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise FeatureImportError(f"movie {movie_id!r} ({path.name}): not a readable Parquet file ({e})") from None
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
        times = ((table.column("start_time").to_numpy(), table.column("end_time").to_numpy())
                 if {"start_time", "end_time"} <= set(table.column_names) else None)
    if times is not None:
        return align_by_time(matrix, *times, [s["start_time"] for s in shots], [s["end_time"] for s in shots],
                             movie_id)
    if len(matrix) != len(shots):
        raise FeatureImportError(f"movie {movie_id!r} ({path.name}): {len(matrix)} rows, but the shots stage has "
                                 f"{len(shots)} shots (give start_time/end_time columns to map your own shot table)")
    return matrix


def run(cfg: Config, source: str, force: bool = False) -> int:
    with stage_lock(Path(cfg.run_dir) / "shot_features") as lock:
        return _run(cfg, Path(source), force, lock.exclusive)


def _run(cfg: Config, source: Path, force: bool, exclusive: bool) -> int:
    started = time.time()
    run_dir = Path(cfg.run_dir)
    shots_dir, out = run_dir / "shots", run_dir / "shot_features"
    if not source.is_dir():
        raise ConfigError(f"{source}: not a folder (one <movie id>.npy or .parquet per movie)")
    input_hash = stage_input_hash(shots_dir / "DONE.json")
    index = pq.read_table(shots_dir / "index.parquet", columns=["movie_id", "shot", "start_time", "end_time"])
    shots: dict[str, list[dict]] = {}
    for r in index.to_pylist():
        shots.setdefault(r["movie_id"], []).append(r)
    files = {p.stem: p for p in sorted(source.iterdir()) if p.suffix in (".npy", ".parquet") and p.is_file()}
    doubles = sorted(s for s in files if (source / f"{s}.npy").is_file() and (source / f"{s}.parquet").is_file())
    if doubles:
        raise ConfigError(f"{source}: both .npy and .parquet for {', '.join(doubles[:5])}; keep one per movie")
    wanted = {m: files.get(safe_name(m)) for m in sorted(shots)}
    unknown = sorted(set(files) - {safe_name(m) for m in shots})
    chash = config_hash({"import": {name: sha256_file(p) for name, p in sorted(files.items())
                                    if name not in unknown}})
    if not force and is_done(out, chash, input_hash):
        print(f"import-shot-features: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    if exclusive:
        remove_stale_tmp(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "DONE.json").unlink(missing_ok=True)
    rows, failures, dim = [], [], None
    for movie, path in progress(wanted.items(), total=len(wanted), desc="import shot features", unit="movie"):
        try:
            if path is None:
                raise FeatureImportError(f"movie {movie!r}: no {safe_name(movie)}.npy or .parquet in {source}")
            matrix = read_source(path, movie, shots[movie])
            if dim is not None and matrix.shape[1] != dim:
                raise FeatureImportError(f"movie {movie!r} ({path.name}): dimension {matrix.shape[1]}, the other "
                                         f"movies have {dim}")
            dim = matrix.shape[1]
            rows.append(write_movie_features(out, movie, matrix))
        except FeatureImportError as e:
            failures.append({"movie_id": movie, "file": str(path) if path else None, "reason": str(e)})
    write_index(out, rows)
    prune(out, "features-*.npy", {feature_file(r["movie_id"]) for r in rows})
    if (out / "parts").is_dir():  # extract-shot-features' per-movie stamps: not these features
        prune(out / "parts", "*.json", set())
    with atomic_path(out / "failures.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
    counts = {"movies": len(rows), "shots": int(sum(r["num_shots"] for r in rows)), "dim": dim or 0,
              "failed": len(failures)}
    write_done(out, STAGE, chash, input_hash, counts, started, imported_from=str(source.resolve()),
               ignored_files=[files[u].name for u in unknown])
    for f in failures[:20]:
        print(f"import-shot-features: {f['reason']}")
    if len(failures) > 20:
        print(f"import-shot-features: ... and {len(failures) - 20} more (all in {out / 'failures.jsonl'})")
    if unknown:
        print(f"import-shot-features: ignored {len(unknown)} file(s) of movies the shots stage does not hold: "
              f"{', '.join(files[u].name for u in unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    print(f"import-shot-features: {len(rows)} movies, {counts['shots']} shots, {dim}-d from {source} → {out}"
          + (f"; {len(failures)} failed" if failures else ""))
    return 1 if failures else 0
