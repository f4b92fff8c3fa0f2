"""Stage extract_shot_features: shots + shot_encoder → run_dir/shot_features/.

The frozen E_shot backbone (before the projection head) embeds every keyframe of every shot (the
deterministic eval view: short side to the model's size, centre crop); a shot's feature is the mean
over its k keyframes. One fp16 array per movie (``features-<ID>.npy``, M × d, shot order; ID the movie's safe name)
and ``index.parquet`` (movie_id, file, num_shots, dim). Loader workers decode shards while
the model runs; batched ``torch.inference_mode``, bf16 on CUDA. Data-parallel like detect-shots
(movies split across processes, per-movie parts, the last process merges).
"""

from __future__ import annotations


import numpy as np
import torch
from torch.utils.data import DataLoader

from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.data import MovieChunks, loader_workers, shard_digests
from movies2scenes.features import feature_file, write_index, write_movie_features
from movies2scenes.integrity import file_record
from movies2scenes.models.folder import load_vit, read_model_config

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, PerItemStage, StageContext
from .protocol import done_record, prune, stage_input_hash

class ExtractShotFeatures(PerItemStage):
    spec = STAGE_SPECS["extract-shot-features"]

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
        self.shards = shard_digests(ctx.run.folder("shots"))  # movie_id → (shard, sha256), sorted by id
        encoder = stage_input_hash(ctx.run.done("shot_encoder"))
        self.stamps = {m: f"{ctx.config_hash}:{encoder}:{digest}" for m, (_, digest) in self.shards.items()}
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return list(self.shards)

    def accepts(self, ctx: StageContext, movie_id: str, rec: dict) -> bool:
        return rec.get("stamp") == self.stamps[movie_id] and "files" in rec

    def size(self, ctx: StageContext, movie_id: str) -> float:
        return float((ctx.run.folder("shots") / self.shards[movie_id][0]).stat().st_size)

    def features(self, ctx: StageContext, movie_ids: list[str], workers: int):
        """(movie id, its M × d fp16 features) for each movie, batches packed across movies."""
        enc_dir, fc = ctx.run.folder("shot_encoder"), self.cfg.shot_features
        if getattr(self, "_model", None) is None:  # once per process (or Ray worker)
            self._model = load_vit(enc_dir, self.device)
            self._size = read_model_config(enc_dir)["vit"]["img_size"]
        size = self._size
        movies = [(m, self.shards[m][0]) for m in movie_ids]
        loader = DataLoader(MovieChunks(ctx.run.folder("shots"), movies, size, fc.batch_size), batch_size=None,
                            num_workers=workers)
        pending: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.device.type == "cuda"):
            for images, segments in loader:
                out_all = self._model(images.to(self.device, non_blocking=True)).float().cpu()
                offset = 0
                for movie_id, n_shots, k, last in segments:
                    feats = out_all[offset:offset + n_shots * k].reshape(n_shots, k, -1).mean(1)  # mean over keyframes
                    offset += n_shots * k
                    pending.setdefault(movie_id, []).append(feats.numpy().astype(np.float16))
                    if last:
                        yield movie_id, np.concatenate(pending.pop(movie_id))

    def process_items(self, ctx: StageContext, todo: list[str]):
        """Locally, loader workers decode the next movies' shards while the model runs."""
        for movie_id, matrix in self.features(ctx, todo, loader_workers(self.cfg.shot_features.num_workers)):
            yield movie_id, self.part_record(ctx, movie_id, matrix)

    def process_item(self, ctx: StageContext, movie_id: str) -> dict:
        (_, matrix), = self.features(ctx, [movie_id], 0)
        return self.part_record(ctx, movie_id, matrix)

    def part_record(self, ctx: StageContext, movie_id: str, matrix: np.ndarray) -> dict:
        """Write the movie's features file; its part record, stamped."""
        return write_movie_features(ctx.out, movie_id, matrix) | {"stamp": self.stamps[movie_id]}

    def ray_resources(self) -> tuple[float, float]:
        return 1.0, 0.25 if torch.cuda.is_available() else 0.0

    def merge(self, ctx: StageContext, items: list[str]) -> Finished:
        out = ctx.out
        parts = [self.part(ctx, m) for m in items]
        write_index(out, parts)
        files = {name: f for p in parts for name, f in p["files"].items()}
        files["index.parquet"] = file_record(out / "index.parquet")
        prune(out, "features-*.npy", {feature_file(m) for m in items})
        counts = {"movies": len(parts), "shots": int(sum(p["num_shots"] for p in parts)),
                  "dim": parts[0]["dim"] if parts else 0}
        return Finished(counts, files=files, extra={"device": str(self.device)}, say=[
            f"extract-shot-features: {counts['movies']} movies, {counts['shots']} shots × "
            f"{counts['dim']} (fp16) → {out}"])


def run(cfg: Config, shard: str | None = None, force: bool = False) -> int:
    return ExtractShotFeatures(cfg, force, shard).run()
