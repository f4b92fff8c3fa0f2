"""Stage extract_shot_features: shots + shot_encoder → run_dir/shot_features/.

The frozen E_shot backbone (before the projection head) embeds every keyframe of every shot (the
deterministic eval view: short side to the model's size, centre crop); a shot's feature is the mean
over its k keyframes. One fp16 array per movie (``features-NNNNNN.npy``, M × d, shot order) and
``index.parquet`` (movie_id, movie_index, file, num_shots, dim). Loader workers decode shards while
the model runs; batched ``torch.inference_mode``, bf16 on CUDA. Data-parallel like detect-shots
(movies split across processes, per-movie parts, the last process merges).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from movies2scenes.config import Config, config_hash
from movies2scenes.data import eval_transform, loader_workers, movie_shots
from movies2scenes.features import feature_file
from movies2scenes.models.vit import load_vit, read_model_config
from movies2scenes.progress import progress
from movies2scenes.store import (
    atomic_path,
    decode_keyframes,
    iter_tar,
    read_json,
    remove_stale_tmp,
    write_json,
    write_parquet,
)

from ._stage import is_done, process_slot, stage_input_hash, stage_lock, write_done

STAGE = "extract_shot_features"


class MovieChunks(IterableDataset):
    """Full batches of eval views packed across movies, with the segments they hold.

    Yields (images (n, 3, S, S), segments) where each segment is (movie_index, n_shots, k, last):
    n_shots·k consecutive images of one movie (k keyframes per shot), ``last`` when the movie ends.
    A movie's keyframes share one size, so the transform runs batched per movie."""

    def __init__(self, shots_dir: Path, movies: list[tuple[int, str]], size: int, batch_images: int):
        self.dir, self.movies, self.batch = shots_dir, movies, batch_images
        self.transform = eval_transform(size)

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        images, segments, filled = [], [], 0
        for j, (movie_index, shard) in enumerate(self.movies):
            if j % nw != wid:
                continue
            frames = np.stack([decode_keyframes(s) for s in iter_tar(self.dir / shard)])  # (M, k, h, w, 3)
            m, k = frames.shape[:2]
            views = self.transform(torch.from_numpy(frames.reshape(m * k, *frames.shape[2:])).permute(0, 3, 1, 2))
            start = 0
            while start < m:  # cut the movie at batch boundaries, whole shots only
                take = max(1, min(m - start, (self.batch - filled) // k))
                images.append(views[start * k:(start + take) * k])
                segments.append((movie_index, take, k, start + take == m))
                filled += take * k
                start += take
                if filled >= self.batch:
                    yield torch.cat(images), segments
                    images, segments, filled = [], [], 0
        if images:
            yield torch.cat(images), segments


def run(cfg: Config, shard: str | None = None, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/shot_features/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "shot_features", shard) as lock:
        return _run(cfg, shard, force, exclusive=lock.exclusive)


def _run(cfg: Config, shard: str | None = None, force: bool = False, exclusive: bool = True) -> int:
    started = time.time()
    run_dir = Path(cfg.run_dir)
    shots_dir, enc_dir, out = run_dir / "shots", run_dir / "shot_encoder", run_dir / "shot_features"
    input_hash = stage_input_hash(shots_dir / "DONE.json", enc_dir / "DONE.json")
    chash = config_hash(cfg.shot_features)
    slot = process_slot(shard)
    if not force and is_done(out, chash, input_hash):
        if slot.is_main:
            print(f"extract-shot-features: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    if exclusive:
        remove_stale_tmp(out)  # what a killed run left; nobody else writes here (the lock)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    (out / "DONE.json").unlink(missing_ok=True)

    movies = movie_shots(shots_dir)  # shard → [(key, movie_id)]
    all_movies = sorted((int(s.split("-")[1].split(".")[0]), s) for s in movies)
    stamp = f"{chash}:{input_hash}"
    todo = []
    for movie_index, shard_name in all_movies:
        if not slot.mine(movie_index):
            continue
        part = out / "parts" / f"{movie_index:06d}.json"
        if not force and part.is_file() and read_json(part).get("stamp") == stamp \
                and (out / feature_file(movie_index)).is_file():
            continue
        todo.append((movie_index, shard_name))

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_vit(enc_dir, device)
    size = read_model_config(enc_dir)["vit"]["img_size"]
    fc = cfg.shot_features
    loader = DataLoader(MovieChunks(shots_dir, todo, size, fc.batch_size), batch_size=None,
                        num_workers=loader_workers(fc.num_workers))
    pending: dict[int, list[np.ndarray]] = {}
    bar = progress(total=len(todo), desc=f"features [{slot.rank + 1}/{slot.world}]", unit="movie",
                   position=slot.rank)
    shard_of = dict(todo)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                enabled=device.type == "cuda"):
        for images, segments in loader:
            out_all = model(images.to(device, non_blocking=True)).float().cpu()
            offset = 0
            for movie_index, n_shots, k, last in segments:
                feats = out_all[offset:offset + n_shots * k].reshape(n_shots, k, -1).mean(1)  # mean over keyframes
                offset += n_shots * k
                pending.setdefault(movie_index, []).append(feats.numpy().astype(np.float16))
                if not last:
                    continue
                matrix = np.concatenate(pending.pop(movie_index))
                with atomic_path(out / feature_file(movie_index)) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, matrix, allow_pickle=False)
                movie_id = movies[shard_of[movie_index]][0][1]
                write_json(out / "parts" / f"{movie_index:06d}.json",
                           {"movie_id": movie_id, "movie_index": movie_index, "stamp": stamp,
                            "num_shots": int(matrix.shape[0]), "dim": int(matrix.shape[1])})
                bar.update()
    bar.close()

    slot.wait_for_everyone()
    if not slot.is_main and slot.state is not None:
        return 0
    parts = []
    for movie_index, _ in all_movies:
        p = out / "parts" / f"{movie_index:06d}.json"
        rec = read_json(p) if p.is_file() else None
        if not rec or rec.get("stamp") != stamp:
            print(f"extract-shot-features: process {slot.rank}/{slot.world} done; other shards still "
                  "pending — the last process to finish merges the index")
            return 0
        parts.append(rec)
    table = pa.table({
        "movie_id": [p["movie_id"] for p in parts],
        "movie_index": pa.array([p["movie_index"] for p in parts], pa.int32()),
        "file": [feature_file(p["movie_index"]) for p in parts],
        "num_shots": pa.array([p["num_shots"] for p in parts], pa.int32()),
        "dim": pa.array([p["dim"] for p in parts], pa.int32()),
    })
    write_parquet(out / "index.parquet", table)
    counts = {"movies": len(parts), "shots": int(sum(p["num_shots"] for p in parts)),
              "dim": parts[0]["dim"] if parts else 0}
    write_done(out, STAGE, chash, input_hash, counts, started, device=str(device))
    print(f"extract-shot-features: {counts['movies']} movies, {counts['shots']} shots × "
          f"{counts['dim']} (fp16) → {out}")
    return 0
