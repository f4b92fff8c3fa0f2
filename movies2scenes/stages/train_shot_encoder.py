"""Stage train_shot_encoder: shots → run_dir/shot_encoder/ (MoCo with neighbour positives).

Trains on the shots of the catalogue's ``train``-split movies only (``shot_encoder.train_split_only``):
evaluation movies are never seen in pretraining. A readable Accelerate loop. Resumes from the newest checkpoint at the same step and data position;
a NaN/inf loss stops the run with a clear message and leaves the last good checkpoint in place.
Writes ``model.safetensors`` + ``config.json`` (the query backbone: E_shot), ``head.safetensors``
(the projection head), ``metrics.json``, TensorBoard logs under ``logs/`` and ``DONE.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict

from torch.utils.data import DataLoader

from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.data import TripletStream, epoch_triplets, loader_workers, movie_shots, train_transform
from movies2scenes.models.moco import MoCo
from movies2scenes.models.backbone import create_backbone, load_pretrained
from movies2scenes.layout import MODEL_FILES
from movies2scenes.models.folder import save_vit
from movies2scenes.store import write_json
from movies2scenes.catalogue import eval_only_movies
from movies2scenes.monitor import make_knn_monitor
from movies2scenes.training import gain_lines, learning_metrics

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, Schedule, StageContext, Trained, TrainingStage
from .protocol import init_stamp

def pretraining_movies(cfg: Config) -> set[str] | None:
    """The catalogue's train-split movie ids, or None (= every movie) when
    ``shot_encoder.train_split_only`` is off or no catalogue is given."""
    if not cfg.shot_encoder.train_split_only or not cfg.catalogue:
        return None
    from movies2scenes.catalogue import load_catalogue

    return {m.movie_id for m in load_catalogue(cfg.catalogue) if m.split == "train"}


def hashed_settings(ecfg) -> dict:
    """The shot_encoder section as it enters the config hash. ``init: random`` (the default) is
    left out, so the hash is the one from before ``init`` existed: upgrading does not make every
    trained E_shot stale."""
    settings = asdict(ecfg)
    if settings["init"] == "random":
        del settings["init"]
    return settings


class TrainShotEncoder(TrainingStage):
    spec = STAGE_SPECS["train-shot-encoder"]
    section, progress_unit = "shot_encoder", "shots"

    def check(self) -> None:
        shots_dir = self.run_layout.folder("shots")
        self.movies = movie_shots(shots_dir) if self.run_layout.is_done("shots") else {}  # shard → its shots
        self.kept = pretraining_movies(self.cfg)
        if self.kept is not None:
            self.movies = {shard: rows for shard, rows in self.movies.items() if rows[0][1] in self.kept}

    def input_hash(self) -> str:
        return super().input_hash() + init_stamp(self.cfg.shot_encoder.init)

    def config_hash(self) -> str:
        return config_hash({"shot_encoder": hashed_settings(self.cfg.shot_encoder), "seed": self.cfg.seed,
                            "movies": hashlib.sha256(" ".join(sorted(self.movies)).encode()).hexdigest()[:16]})

    def prepare(self, ctx: StageContext) -> None:
        ecfg = self.cfg.shot_encoder
        if not self.movies:
            raise ConfigError(f"no movies to train on: {ctx.run.folder('shots')} has no shots of the catalogue's "
                              "train split (set shot_encoder.train_split_only=false to use every movie)")
        self.triplet_args = (self.cfg.seed, ecfg.query_fraction, ecfg.neighbour_offset, ecfg.shuffle_movies)
        self.transform = train_transform(ecfg.model.img_size, ecfg.augment)

    def schedule(self, world: int) -> Schedule:
        tr = self.train_cfg
        if self.accelerator.is_main_process:
            print(f"train-shot-encoder: {len(self.movies)} movies" + (" (the catalogue's train split)"
                  if self.kept is not None else " (every movie of the shots stage)"))
        queries = len(epoch_triplets(self.movies, 0, *self.triplet_args))
        return self.epochs(queries, tr.batch_size,
                           f"{queries} query shots (of {sum(len(s) for s in self.movies.values())} shots in "
                           f"{len(self.movies)} movies) are too few for one batch of {tr.batch_size}: lower "
                           "shot_encoder.train.batch_size or raise shot_encoder.query_fraction")

    def model(self, device) -> MoCo:
        ecfg = self.cfg.shot_encoder
        try:
            backbone = create_backbone(ecfg.model)
        except ValueError as e:
            raise ConfigError(f"shot_encoder.model.arch: {e}") from None
        if ecfg.init != "random":
            dropped = load_pretrained(backbone, ecfg.init)
            if self.accelerator.is_main_process:
                print(f"train-shot-encoder: starting from {ecfg.init}"
                      + (f" (left out its classification head: {', '.join(dropped)})" if dropped else ""))
        return MoCo(backbone, ecfg.moco.dim, ecfg.moco.mlp_hidden, ecfg.moco.queue_size,
                    ecfg.moco.momentum, ecfg.moco.temperature, seed=self.cfg.seed).to(device)

    def tracked(self) -> dict:
        return super().tracked() | {"arch": self.cfg.shot_encoder.model.arch, "steps": self.plan.total}

    def batches(self, epoch: int, start: int) -> DataLoader:
        ecfg, local = self.cfg.shot_encoder, self.train_cfg.batch_size // self.world
        stream = TripletStream(self.run_layout.folder("shots"), epoch_triplets(self.movies, epoch, *self.triplet_args),
                               local, self.rank, self.world, self.transform, ecfg.model.img_size, self.cfg.seed,
                               epoch, start, cache_movies=ecfg.shuffle_movies + 1)
        return DataLoader(stream, batch_size=local, num_workers=loader_workers(self.train_cfg.num_workers))

    def monitor(self, ctx: StageContext):
        tr, ecfg = self.train_cfg, self.cfg.shot_encoder
        return make_knn_monitor(ctx.run.folder("shots"), {rows[0][1] for rows in self.movies.values()},
                                ecfg.model.img_size, tr.knn_movies, tr.knn_per_movie, self.cfg.seed,
                                eval_only=eval_only_movies(self.cfg.catalogue))

    def save(self, ctx: StageContext, model: MoCo, trained: Trained) -> Finished:
        from safetensors.torch import save_file

        ecfg, out, step = self.cfg.shot_encoder, ctx.out, trained.step
        save_vit(model.encoder_q, ecfg.model, out, stage=self.spec.record, moco=asdict(ecfg.moco))
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head_q.state_dict().items()},
                  str(out / "head.safetensors"))
        per_epoch = trained.schedule.steps_per_epoch
        learning = learning_metrics(trained.logged, ecfg.moco.queue_size, trained.monitor)
        write_json(out / "metrics.json", {
            "steps": step, "final_loss": trained.loss, "steps_per_epoch": per_epoch,
            "chosen_t_plus": trained.logged.get("chosen_t_plus", float("nan")), "processes": trained.world,
            "movies": len(self.movies), **learning})
        learned = self.learned_from(ctx, [rows[0][1] for rows in self.movies.values()])
        return Finished({"steps": step, "epochs": step / per_epoch, "movies": len(self.movies)},
                        outputs=MODEL_FILES, extra={"final_loss": trained.loss, **learned},
                        say=[f"train-shot-encoder: {step} steps, final loss {trained.loss:.4f} → {out}" if step else
                             f"train-shot-encoder: 0 steps (train.epochs 0): {ecfg.init} saved as it is → {out}",
                             *gain_lines("train-shot-encoder", learning)])


def run(cfg: Config, force: bool = False) -> int:
    return TrainShotEncoder(cfg, force).run()
