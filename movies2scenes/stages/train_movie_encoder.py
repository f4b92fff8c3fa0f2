"""Stage train_movie_encoder: shot_features + movie_pairs → run_dir/movie_encoder/.

Positives: the pairs of ``movie_pairs/<movie_encoder.pairs_source>.parquet`` (S) whose movies have
features; ``heldout_fraction`` of them are held out. Negatives: random movie pairs not in S, as
many as positives, fresh each epoch for training (seeded by epoch) and fixed for the held-out set.
Binary cross-entropy on the pooled-adjacency logit. Checkpoints, resume (same step and data
position), NaN guard and TensorBoard as the shot encoder. Writes ``model.safetensors`` +
``config.json`` and ``metrics.json`` (held-out ROC-AUC and accuracy; when the catalogue has
genres, also ``genre_disjoint``: the same held-out positives against random pairs sharing no genre).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from movies2scenes.catalogue import catalogue_genres
from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.features import ShotFeatures
from movies2scenes.integrity import verified
from movies2scenes.models.movie import MovieEncoder
from movies2scenes.movie_pairs import (FeatureBank, epoch_pairs, eval_sample, genre_disjoint_heldout, heldout_metrics,
                                       split_pairs)
from movies2scenes.store import atomic_path, write_json

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, Schedule, StageContext, Trained, TrainingStage

class TrainMovieEncoder(TrainingStage):
    spec = STAGE_SPECS["train-movie-encoder"]
    section, progress_unit = "movie_encoder", "pairs"

    def config_hash(self) -> str:
        return config_hash({"movie_encoder": asdict(self.cfg.movie_encoder), "seed": self.cfg.seed})

    def prepare(self, ctx: StageContext) -> None:
        """Positives: the source's pairs between movies with features; split off the held-out ones."""
        me, seed = self.cfg.movie_encoder, self.cfg.seed
        source_file = ctx.run.folder("movie_pairs") / f"{me.pairs_source}.parquet"
        if not source_file.is_file():
            raise ConfigError(f"movie_encoder.pairs_source {me.pairs_source!r}: {source_file} does not "
                              "exist (add it to movie_pairs.sources)")
        self.feats = ShotFeatures(ctx.run.folder("shot_features"))
        have = set(self.feats.movie_ids)
        table = pq.read_table(verified(source_file)).to_pylist()
        self.positives = sorted({(r["movie_a"], r["movie_b"]) for r in table
                                 if r["movie_a"] in have and r["movie_b"] in have})
        self.movies = sorted({m for p in self.positives for m in p})
        if len(self.positives) < 4:
            raise ConfigError(f"{source_file}: only {len(self.positives)} pair(s) between movies with shot "
                              "features; need at least 4")
        self.train_pos, self.heldout = split_pairs(self.positives, self.movies, me.heldout_fraction, seed)
        self.pos_set = set(self.positives)
        n_free = len(self.movies) * (len(self.movies) - 1) // 2 - len(self.positives)
        if n_free < 1 or sum(1 for *_, label in self.heldout if label == 0) == 0:
            raise ConfigError(f"{len(self.movies)} movies and {len(self.positives)} similar pairs leave only {n_free} "
                              "non-similar pairs: too few to draw random negatives (lower "
                              "movie_pairs.per_movie or add movies)")

    def schedule(self, world: int) -> Schedule:
        per_epoch = 2 * len(self.train_pos)  # every positive and as many random negatives
        batch_size = min(self.train_cfg.batch_size, per_epoch - per_epoch % world)  # tiny S: one batch per epoch
        return self.epochs(per_epoch, batch_size, "no batch of movie pairs")

    def model(self, device) -> MovieEncoder:
        me = self.cfg.movie_encoder
        model = MovieEncoder(self.feats.dim, me.hidden, me.out_dim, me.dropout, me.max_shots, me.pool_kernel,
                             me.pool_stride)
        self.bank = FeatureBank(self.feats, me.max_shots, self.movies)
        return model

    def tracked(self) -> dict:
        return {"lr": self.train_cfg.lr, "batch_size": self.plan.batch_size,
                "pairs_source": self.cfg.movie_encoder.pairs_source}

    def batches(self, epoch: int, start: int):
        """Each batch: both movies' shot features (random crops of ``max_shots``) and the label."""
        seed, batch_size = self.cfg.seed, self.plan.batch_size
        local = batch_size // self.world
        items = epoch_pairs(self.train_pos, self.movies, self.pos_set, epoch, seed)
        for b in range(start, self.plan.steps_per_epoch):
            base = b * batch_size + self.rank * local
            chunk = items[base:base + local]
            rng = np.random.default_rng([seed, 43, epoch, b, self.rank])  # crop offsets
            x1, m1 = self.bank.batch([a for a, _, _ in chunk], rng)
            x2, m2 = self.bank.batch([c for _, c, _ in chunk], rng)
            yield {"x1": x1, "m1": m1, "x2": x2, "m2": m2, "y": torch.tensor([label for _, _, label in chunk])}

    def forward(self, model):
        def loss(batch: dict) -> tuple[torch.Tensor, dict]:
            logits = model(batch["x1"], batch["m1"], batch["x2"], batch["m2"])
            return F.binary_cross_entropy_with_logits(logits.float(), batch["y"]), {}
        return loss

    def heldout_scores(self, model, device) -> dict:
        """Held-out ROC-AUC and accuracy, and against random pairs sharing no genre when known."""
        me, seed, heldout = self.cfg.movie_encoder, self.cfg.seed, self.heldout
        metrics = heldout_metrics(model, self.bank, eval_sample(heldout, me.eval_pairs, seed), device)
        metrics["heldout_pairs"] = len(heldout)
        genres = catalogue_genres(self.cfg.catalogue)
        disjoint = genre_disjoint_heldout(heldout, self.movies, self.pos_set, genres, seed) if genres else []
        if disjoint:
            metrics["genre_disjoint"] = heldout_metrics(model, self.bank, eval_sample(disjoint, me.eval_pairs, seed),
                                                        device, desc="genre-disjoint AUC")
        return metrics

    def save(self, ctx: StageContext, model: MovieEncoder, trained: Trained) -> Finished:
        from accelerate.utils import set_seed
        from safetensors.torch import save_file

        me, out, step = self.cfg.movie_encoder, ctx.out, trained.step
        metrics = self.heldout_scores(model, self.accelerator.device)
        set_seed(self.cfg.seed)  # the model as training started it (the kit seeds it the same way)
        start = heldout_metrics(self.model(self.accelerator.device).eval(), self.bank,
                                eval_sample(self.heldout, me.eval_pairs, self.cfg.seed), self.accelerator.device,
                                desc="AUC at the start")
        metrics["start"] = {"auc": start["auc"], "accuracy": start["accuracy"]}
        self.accelerator.log({"heldout_auc": metrics["auc"], "heldout_accuracy": metrics["accuracy"]}, step=step)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        write_json(out / "config.json", {"in_dim": self.feats.dim, "hidden": me.hidden, "out_dim": me.out_dim,
                                         "dropout": me.dropout, "max_shots": me.max_shots,
                                         "kernel": me.pool_kernel, "stride": me.pool_stride,
                                         "feature_mean": self.bank.mean.tolist(),
                                         "feature_std": self.bank.std.tolist()})
        metrics |= {"steps": step, "final_loss": trained.loss, "pairs_source": me.pairs_source,
                    "train_positives": len(self.train_pos), "heldout_positives": int(sum(y for *_, y in self.heldout))}
        write_json(out / "metrics.json", metrics)
        extra = (f"; vs genre-disjoint random pairs AUC {metrics['genre_disjoint']['auc']:.3f}"
                 if "genre_disjoint" in metrics else "")
        return Finished({"steps": step, "positives": len(self.positives)}, outputs=["model.safetensors", "config.json"],
                        extra={"heldout_auc": metrics["auc"], **self.learned_from(ctx, self.movies)},
                        say=[f"train-movie-encoder: {step} steps on {len(self.train_pos)} {me.pairs_source} pairs; "
                             f"held-out AUC {metrics['auc']:.3f} (its random start: {start['auc']:.3f}, chance 0.5), "
                             f"accuracy {metrics['accuracy']:.3f}{extra} → {out}"])


def run(cfg: Config, force: bool = False) -> int:
    return TrainMovieEncoder(cfg, force).run()
