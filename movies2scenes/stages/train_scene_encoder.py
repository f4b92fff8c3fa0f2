"""Stage train_scene_encoder: scene_pairs → run_dir/scene_encoder/.

MoCo (``models/moco.py``, the pair form) on the mined scene pairs: the query is one scene of a pair,
its positive the other scene, negatives the queue. Keys are gathered from every process before they
are enqueued. An epoch's order is a seeded function of the epoch (``data.epoch_scene_pairs``), so a
resumed run sees exactly the batches an uninterrupted one would. Checkpoints, NaN guard,
TensorBoard and progress as the shot encoder. Two architectures (``scene_encoder.arch``), each a
scene source (:mod:`movies2scenes.scene_sources`: what the encoder is, what it reads, how it is
saved): the paper's joint ``SceneViT`` over pixels, or a factorised temporal residual over the shot
features (with a drift guard that keeps the kNN monitor's best step, step 0 = the mean included).

Writes ``model.safetensors`` + ``config.json`` + ``movies2scenes.json`` (the query encoder without
its projection head — the product; factorised: the shot backbone, plus ``temporal.safetensors``),
``head.safetensors``, ``metrics.json``.
"""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import torch

from movies2scenes.config import Config, config_hash, scene_encoder_settings
from movies2scenes.integrity import read_done, verified
from movies2scenes.models.moco import MoCo
from movies2scenes.models.pretext import PretextMoCo
from movies2scenes.scene_sources import scene_source
from movies2scenes.store import write_json
from movies2scenes.training import BestByKnn, gain_lines, learning_metrics

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, Schedule, StageContext, Trained, TrainingStage
from .protocol import init_stamp, stage_input_hash


def scene_pair_movies(scene_dir) -> list[str]:
    """The movies whose scenes are in the mined pairs (what the scene encoder is trained on)."""
    t = pq.read_table(verified(scene_dir / "pairs.parquet"), columns=["movie_a", "movie_b"])
    return sorted(set(t.column("movie_a").to_pylist()) | set(t.column("movie_b").to_pylist()))


class TrainSceneEncoder(TrainingStage):
    spec = STAGE_SPECS["train-scene-encoder"]
    section, progress_unit = "scene_encoder", "scenes"

    def config_hash(self) -> str:
        return config_hash({"scene_encoder": scene_encoder_settings(self.cfg.scene_encoder), "seed": self.cfg.seed})

    def input_hash(self) -> str:
        run = self.run_layout
        if not run.is_done("scene_pairs"):
            stage_input_hash(run.done("scene_pairs"))  # the error naming the missing stage
        n = int(read_done(run.done("scene_pairs"))["shots_per_scene"])  # what the pairs were mined with
        self.source = scene_source(self.cfg, n)
        return (stage_input_hash(*(run.done(f) for f in self.source.inputs()))
                + init_stamp(self.source.starting_weights()))

    def upstream(self) -> list[str]:
        return list(self.source.inputs())

    def schedule(self, world: int) -> Schedule:
        tr, num_pairs = self.train_cfg, self.source.num_pairs
        self.source.place(self.rank, world, tr.batch_size // world)
        return self.epochs(num_pairs, tr.batch_size, f"{num_pairs} scene pairs are too few for one batch of "
                           f"{tr.batch_size}: lower scene_encoder.train.batch_size or mine more pairs")

    def model(self, device) -> MoCo:
        sc = self.cfg.scene_encoder
        encoder, terms = self.source.encoder(), self.source.terms()
        args = (sc.moco.dim, sc.moco.mlp_hidden, sc.moco.queue_size, sc.moco.momentum, sc.moco.temperature)
        if terms is None:  # the paper's pair loss alone
            return MoCo(encoder, *args, seed=self.cfg.seed).to(device)
        return PretextMoCo(encoder, terms(encoder), *args, seed=self.cfg.seed).to(device)

    def parameters(self, model: MoCo):
        return self.source.param_groups(model)

    def forward(self, model):
        compiled = self.cfg.scene_encoder.compile and self.accelerator.device.type == "cuda"
        return torch.compile(model) if compiled else model

    def tracked(self) -> dict:
        return super().tracked() | {"arch": self.source.describe(), "steps": self.plan.total}

    def batches(self, epoch: int, start: int):
        return self.source.batches(epoch, start)

    def monitor(self, ctx: StageContext):
        return self.source.monitor(set(scene_pair_movies(ctx.run.folder("scene_pairs"))))

    def keep_best(self, ctx: StageContext, monitor) -> BestByKnn | None:
        if monitor is None:
            return None
        return self.source.keeper(ctx.out / "checkpoints", ctx.stamp, set(scene_pair_movies(ctx.run.folder("scene_pairs"))))

    def kept(self, model: MoCo, step: int) -> dict:
        """Which step's weights are saved: the drift guard's (restored), else the last."""
        sc, keeper = self.cfg.scene_encoder, self.keeper
        if keeper is not None and keeper.step is not None:
            keeper.restore(model.encoder_q)  # the drift guard's step (0 = the mean)
            return keeper.record(step)
        if sc.arch == "factorised" and sc.factorised.keep != "last":
            print("train-scene-encoder: warning: no kNN monitor (knn_every = 0 or fewer than 2 probe movies); "
                  "keeping the last step, not the drift guard's", file=sys.stderr)
        return {"rule": "last", "step": step}

    def save(self, ctx: StageContext, model: MoCo, trained: Trained) -> Finished:
        from safetensors.torch import save_file

        sc, out, step, num_pairs = self.cfg.scene_encoder, ctx.out, trained.step, self.source.num_pairs
        kept = self.kept(model, step)
        outputs = self.source.save(model.encoder_q, out, self.spec.record)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head_q.state_dict().items()},
                  str(out / "head.safetensors"))
        factorised = sc.arch == "factorised"
        learning = learning_metrics(trained.logged, sc.moco.queue_size, trained.monitor, kept.get("knn_top1"))
        write_json(out / "metrics.json", {
            "steps": step, "final_loss": trained.loss, "steps_per_epoch": trained.schedule.steps_per_epoch,
            "scene_pairs": num_pairs, "processes": trained.world, **({"kept": kept} if factorised else {}),
            **learning})
        learned = self.learned_from(ctx, scene_pair_movies(ctx.run.folder("scene_pairs")))
        return Finished({"steps": step, "epochs": step / trained.schedule.steps_per_epoch, "scene_pairs": num_pairs},
                        outputs=outputs, extra={"final_loss": trained.loss, **learned},
                        say=[f"train-scene-encoder: {step} steps, final loss {trained.loss:.4f} → {out}"
                             + (f" (kept step {kept['step']}: {kept['rule']})" if factorised else ""),
                             *gain_lines("train-scene-encoder", learning)])


def run(cfg: Config, force: bool = False) -> int:
    return TrainSceneEncoder(cfg, force).run()
