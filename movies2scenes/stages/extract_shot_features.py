"""Stage extract_shot_features: shots + shot_encoder → run_dir/shot_features/.

The frozen E_shot backbone (before the projection head) embeds every keyframe of every shot (the
deterministic eval view: short side to the model's size, centre crop); a shot's feature is the mean
over its k keyframes. One fp16 array per movie (``features-<ID>.npy``, M × d, shot order; ID the movie's safe name)
and ``index.parquet`` (movie_id, file, num_shots, dim). Loader workers decode shards while
the model runs; batched ``torch.inference_mode``, bf16 on CUDA. Data-parallel like detect-shots
(movies split across processes, per-movie parts, the last process merges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.data import eval_transform, loader_workers, shard_digests
from movies2scenes.features import feature_file, write_index, write_movie_features
from movies2scenes.models.folder import load_vit, read_model_config
from movies2scenes.progress import progress
from movies2scenes.store import (
    decode_keyframes,
    iter_tar,
    read_json,
    write_json,
)

from .kit import Finished, PerItemStage, StageContext, StageSpec
from .protocol import done_record, part_name, prune, stage_input_hash

class MovieChunks(IterableDataset):
    """Full batches of eval views packed across movies, with the segments they hold, read shot by
    shot from the shards (memory bounded by the batch, not by the movie's length).

    Yields (images (n, 3, S, S), segments) where each segment is (movie_id, n_shots, k, last):
    n_shots·k consecutive images of one movie (k keyframes per shot), ``last`` when the movie ends.
    A segment's keyframes share one size, so the transform runs batched per segment."""

    def __init__(self, shots_dir: Path, movies: list[tuple[str, str]], size: int, batch_images: int):
        self.dir, self.movies, self.batch = shots_dir, movies, batch_images
        self.transform = eval_transform(size)

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        images, segments, filled = [], [], 0
        for j, (movie_id, shard) in enumerate(self.movies):
            if j % nw != wid:
                continue
            run: list[np.ndarray] = []  # (k, h, w, 3) keyframes of the segment being filled
            samples = iter_tar(self.dir / shard)
            sample = next(samples, None)
            while sample is not None:
                frames = decode_keyframes(sample)
                sample = next(samples, None)
                run.append(frames)
                filled += len(frames)
                last = sample is None
                full = filled + len(frames) > self.batch  # the next shot would not fit
                if last or full:
                    batch = np.stack(run)  # (n, k, h, w, 3)
                    n, k = batch.shape[:2]
                    flat = torch.from_numpy(batch.reshape(n * k, *batch.shape[2:])).permute(0, 3, 1, 2)
                    images.append(self.transform(flat))
                    segments.append((movie_id, n, k, last))
                    run = []
                if full:
                    yield torch.cat(images), segments
                    images, segments, filled = [], [], 0
        if images:
            yield torch.cat(images), segments


class ExtractShotFeatures(PerItemStage):
    spec = StageSpec("extract-shot-features", "shot_features", "extract_shot_features",
                     needs=("shots", "shot_encoder"))

    def config_hash(self) -> str:
        return config_hash(self.cfg.shot_features)

    def check(self) -> None:
        out = self.run_layout.folder("shot_features")
        imported = (done_record(out) or {}).get("imported_from")
        if imported and not self.force:
            raise ConfigError(f"{out} holds shot features imported from {imported} (m2s import-shot-features); "
                              "rerun that command after changes, or --force to replace them with E_shot's")

    def items(self, ctx: StageContext) -> list[str]:
        """Movies of the shots stage. A movie's features depend on this config, the encoder and that
        movie's shard only: its stamp says so, and a movie whose three are unchanged is not redone
        (titles added to or removed from the catalogue leave the others' features alone as long as
        the encoder stays the same)."""
        (ctx.out / "parts").mkdir(parents=True, exist_ok=True)
        self.shards = shard_digests(ctx.run.folder("shots"))  # movie_id → (shard, sha256), sorted by id
        encoder = stage_input_hash(ctx.run.done("shot_encoder"))
        self.stamps = {m: f"{ctx.config_hash}:{encoder}:{digest}" for m, (_, digest) in self.shards.items()}
        return list(self.shards)

    def recorded(self, ctx: StageContext, movie_id: str) -> bool:
        part = ctx.out / "parts" / part_name(movie_id)
        return part.is_file() and read_json(part).get("stamp") == self.stamps[movie_id]

    def complete(self, ctx: StageContext, movie_id: str) -> bool:
        return self.recorded(ctx, movie_id) and (ctx.out / feature_file(movie_id)).is_file()

    def process(self, ctx: StageContext, todo: list[str]) -> None:
        enc_dir, out, slot, fc = ctx.run.folder("shot_encoder"), ctx.out, ctx.slot, self.cfg.shot_features
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_vit(enc_dir, self.device)
        size = read_model_config(enc_dir)["vit"]["img_size"]
        movies = [(m, self.shards[m][0]) for m in todo]
        loader = DataLoader(MovieChunks(ctx.run.folder("shots"), movies, size, fc.batch_size), batch_size=None,
                            num_workers=loader_workers(fc.num_workers))
        pending: dict[str, list[np.ndarray]] = {}
        bar = progress(total=len(todo), desc=f"features [{slot.rank + 1}/{slot.world}]", unit="movie",
                       position=slot.rank)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.device.type == "cuda"):
            for images, segments in loader:
                out_all = model(images.to(self.device, non_blocking=True)).float().cpu()
                offset = 0
                for movie_id, n_shots, k, last in segments:
                    feats = out_all[offset:offset + n_shots * k].reshape(n_shots, k, -1).mean(1)  # mean over keyframes
                    offset += n_shots * k
                    pending.setdefault(movie_id, []).append(feats.numpy().astype(np.float16))
                    if not last:
                        continue
                    row = write_movie_features(out, movie_id, np.concatenate(pending.pop(movie_id)))
                    write_json(out / "parts" / part_name(movie_id), row | {"stamp": self.stamps[movie_id]})
                    bar.update()
        bar.close()

    def merge(self, ctx: StageContext, items: list[str]) -> Finished:
        out = ctx.out
        parts = [read_json(out / "parts" / part_name(m)) for m in items]
        write_index(out, parts)
        prune(out / "parts", "*.json", {part_name(m) for m in items})  # movies that left the shots stage
        prune(out, "features-*.npy", {feature_file(m) for m in items})
        counts = {"movies": len(parts), "shots": int(sum(p["num_shots"] for p in parts)),
                  "dim": parts[0]["dim"] if parts else 0}
        return Finished(counts, extra={"device": str(self.device)}, say=[
            f"extract-shot-features: {counts['movies']} movies, {counts['shots']} shots × "
            f"{counts['dim']} (fp16) → {out}"])


def run(cfg: Config, shard: str | None = None, force: bool = False) -> int:
    return ExtractShotFeatures(cfg, force, shard).run()
