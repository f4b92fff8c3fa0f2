"""Stage train_scene_encoder: scene_pairs → run_dir/scene_encoder/.

MoCo (``models/moco.py``, the pair form) on the mined scene pairs: the query is one scene of a pair,
its positive the other scene, negatives the queue. Keys are gathered from every process before they
are enqueued. An epoch's order is a seeded function of the epoch (``data.epoch_scene_pairs``), so a
resumed run sees exactly the batches an uninterrupted one would. Checkpoints, NaN guard,
TensorBoard and progress as the shot encoder. Two architectures (``scene_encoder.arch``), each a
:class:`SceneSource` — what the encoder is, what it reads, how it is saved:

* :class:`JointScenes` (``joint``, the paper's): n shots × k keyframes through one ``SceneViT``,
  streamed from the training shards (``data.ScenePairStream``);
* :class:`FactorisedScenes` (``factorised``): the frozen shot backbone's features, read as windows
  of ``shot_features/`` (no decoding), through ``models.factorised.TemporalResidual`` (the mean of
  the shot features + a zero-initialised residual). Its drift guard (``factorised.keep: knn``) keeps
  the weights of the kNN monitor's best evaluation on held-out movies, step 0 (= the mean) included.

Writes ``model.safetensors`` + ``config.json`` + ``movies2scenes.json`` (the query encoder without
its projection head — the product; factorised: the shot backbone, plus ``temporal.safetensors``),
``head.safetensors``, ``metrics.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from movies2scenes.config import Config, ConfigError, config_hash, scene_encoder_settings
from movies2scenes.data import (
    FeaturePairBatches,
    ScenePairStream,
    epoch_scene_pairs,
    loader_workers,
    scene_pair_keys,
    train_transform,
)
from movies2scenes.models.moco import MoCo
from movies2scenes.models.folder import SETTINGS_FILE, read_model_config, save_vit
from movies2scenes.models.vit import create_scene_vit
from movies2scenes.monitor import make_feature_knn_monitor, make_knn_monitor
from movies2scenes.store import atomic_path, read_json, remove_stale_tmp, write_json
from movies2scenes.training import (
    BestByKnn,
    learning_metrics,
    make_accelerator,
    make_optimizer,
    moco_loop,
    resume,
    warmup_cosine,
)

from ._stage import MODEL_FILES, init_stamp, is_done, stage_input_hash, stage_lock, write_done, write_pretraining_movies

STAGE = "train_scene_encoder"


def initial_encoder(cfg: Config):
    """The scene ViT, randomly initialised or with E_shot's weights (``scene_encoder.init``)."""
    sc = cfg.scene_encoder
    from movies2scenes.models.backbone import is_vit, load_pretrained

    if not is_vit(sc.model.arch):
        raise ConfigError(f"scene_encoder.model.arch {sc.model.arch!r}: the scene encoder must be a timm ViT "
                          "(it lays a scene's frames side by side and interpolates the ViT's positional "
                          "embedding); other backbones can be the shot encoder")
    encoder = create_scene_vit(sc.model, sc.grad_checkpointing)
    if sc.init not in ("random", "shot_encoder"):
        load_pretrained(encoder.vit, sc.init)
    elif sc.init == "shot_encoder":
        from safetensors.torch import load_file

        shot_dir = Path(cfg.run_dir) / "shot_encoder"
        if not (shot_dir / "model.safetensors").is_file():
            raise ConfigError(f"scene_encoder.init=shot_encoder: {shot_dir}/model.safetensors does not exist")
        shot_vit = read_model_config(shot_dir)["vit"]
        if shot_vit != asdict(sc.model):
            raise ConfigError(f"scene_encoder.init=shot_encoder needs scene_encoder.model equal to the shot "
                              f"encoder's ({shot_vit}), got {asdict(sc.model)}")
        encoder.vit.load_state_dict(load_file(str(shot_dir / "model.safetensors")))
    return encoder


def scene_pair_movies(scene_dir: Path) -> list[str]:
    """The movies whose scenes are in the mined pairs (what the scene encoder is trained on)."""
    import pyarrow.parquet as pq

    t = pq.read_table(scene_dir / "pairs.parquet", columns=["movie_a", "movie_b"])
    return sorted(set(t.column("movie_a").to_pylist()) | set(t.column("movie_b").to_pylist()))


def run(cfg: Config, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/scene_encoder/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "scene_encoder") as lock:
        return _run(cfg, force, exclusive=lock.exclusive)


class JointScenes:
    """``arch: joint``: the paper's scene ViT over the pixels of the training shards."""

    def __init__(self, cfg: Config, n: int):
        self.cfg, self.n = cfg, n
        self.run_dir = Path(cfg.run_dir)
        self.scene_dir = self.run_dir / "scene_pairs"
        self.shards = scene_pair_keys(self.scene_dir)
        self.num_pairs = sum(len(v) for v in self.shards.values())
        self.rank, self.world, self.local_batch = 0, 1, 1
        self.size = cfg.scene_encoder.model.img_size  # the side each frame is read at (px)

    def inputs(self) -> list[Path]:
        sc = self.cfg.scene_encoder
        return [self.scene_dir / "DONE.json"] + ([self.run_dir / "shot_encoder" / "DONE.json"]
                                                 if sc.init == "shot_encoder" else [])

    def input_stamp(self) -> str:
        return init_stamp(self.cfg.scene_encoder.init)

    def place(self, rank: int, world: int, local_batch: int) -> None:
        self.rank, self.world, self.local_batch = rank, world, local_batch

    def encoder(self) -> torch.nn.Module:
        return initial_encoder(self.cfg)

    def recipe(self, epoch: int):
        """The epoch's pairs in training order, each with its direction (both architectures)."""
        sc = self.cfg.scene_encoder
        return epoch_scene_pairs(self.shards, epoch, self.cfg.seed, sc.shuffle_shards, sc.swap_sides)

    def batches(self, epoch: int, start: int):
        sc = self.cfg.scene_encoder
        stream = ScenePairStream(self.scene_dir, self.recipe(epoch), self.local_batch, self.rank, self.world,
                                 train_transform(self.size, sc.augment), self.cfg.seed, epoch, start,
                                 cache_shards=sc.shuffle_shards + 1)
        return DataLoader(stream, batch_size=self.local_batch, num_workers=loader_workers(sc.train.num_workers))

    def monitor(self, train_movies: set[str]):
        tr = self.cfg.scene_encoder.train
        if not (self.run_dir / "shots" / "index.parquet").is_file():
            return None
        return make_knn_monitor(self.run_dir / "shots", train_movies, self.size, tr.knn_movies, tr.knn_per_movie,
                                self.cfg.seed, shots_per_item=self.n)

    def keeper(self, ckpt_dir: Path, stamp: str) -> BestByKnn | None:
        """The drift guard (factorised encoders with ``factorised.keep: knn``), else None."""
        sc = self.cfg.scene_encoder
        if sc.arch != "factorised" or sc.factorised.keep != "knn":
            return None
        return BestByKnn(ckpt_dir / "best-knn.safetensors", stamp)

    def param_groups(self, model: MoCo):
        return model.parameters()

    def describe(self) -> str:
        return self.cfg.scene_encoder.model.arch

    def save(self, encoder_q, out: Path) -> list[str]:
        sc = self.cfg.scene_encoder
        save_vit(encoder_q.vit, sc.model, out, stage=STAGE, moco=asdict(sc.moco), kind="scene",
                 shots_per_scene=self.n)
        return list(MODEL_FILES)


class FactorisedScenes(JointScenes):
    """``arch: factorised`` (frozen backbone): a temporal residual over windows of the shot
    features; the saved encoder is the shot backbone that made them plus ``temporal.safetensors``."""

    def __init__(self, cfg: Config, n: int):
        from movies2scenes.features import ShotFeatures

        super().__init__(cfg, n)
        self.feature_dir = self.run_dir / "shot_features"
        self.backbone_dir = self.run_dir / "shot_encoder"
        if not (self.feature_dir / "DONE.json").is_file():
            raise ConfigError(f"scene_encoder.arch=factorised reads shot features: {self.feature_dir}/DONE.json "
                              "is missing (run extract-shot-features or import-shot-features first)")
        self.imported = read_json(self.feature_dir / "DONE.json").get("imported_from")
        self.features = ShotFeatures(self.feature_dir)
        try:
            self.pairs = FeaturePairBatches(self.scene_dir, self.features, n)
        except ValueError as e:
            raise ConfigError(f"{e} (the scene pairs were mined on other shot features: rerun mine-scene-pairs)") from None

    def inputs(self) -> list[Path]:
        return [self.scene_dir / "DONE.json", self.feature_dir / "DONE.json"]

    def input_stamp(self) -> str:
        return ""

    def encoder(self) -> torch.nn.Module:
        from movies2scenes.models.factorised import TemporalResidual

        f = self.cfg.scene_encoder.factorised
        return TemporalResidual(self.features.dim, self.n, f.depth, f.heads, f.mlp_ratio, width=f.width)

    def batches(self, epoch: int, start: int):
        return self.pairs.epoch(self.recipe(epoch), self.local_batch, self.rank, self.world, start)

    def monitor(self, train_movies: set[str]):
        tr = self.cfg.scene_encoder.train
        return make_feature_knn_monitor(self.features, train_movies, tr.knn_movies, tr.knn_per_movie,
                                        self.cfg.seed, self.n)

    def describe(self) -> str:
        f = self.cfg.scene_encoder.factorised
        return f"factorised ({self.features.dim}-d shot features, depth {f.depth}, width {f.width})"

    def save(self, encoder_q, out: Path) -> list[str]:
        import shutil

        from movies2scenes.models.factorised import TEMPORAL_FILE, save_temporal

        sc = self.cfg.scene_encoder
        temporal = save_temporal(encoder_q, out)
        settings = {"stage": STAGE, "moco": asdict(sc.moco), "kind": "scene", "arch": "factorised",
                    "shots_per_scene": self.n, "temporal": temporal, "backbone": "frozen"}
        if self.imported:  # no pixel backbone: the temporal residual works on the user's own features
            for name in ("model.safetensors", "config.json"):
                (out / name).unlink(missing_ok=True)
            write_json(out / SETTINGS_FILE, settings | {"shot_features_imported_from": self.imported})
            return [TEMPORAL_FILE, SETTINGS_FILE, "head.safetensors"]
        backbone = read_model_config(self.backbone_dir)
        for name in ("model.safetensors", "config.json"):  # the frozen backbone, as extract-shot-features read it
            with atomic_path(out / name) as tmp:
                shutil.copyfile(self.backbone_dir / name, tmp)
        write_json(out / SETTINGS_FILE, {"vit": backbone["vit"], **settings})
        return [*MODEL_FILES, TEMPORAL_FILE]


class FinetunedScenes(JointScenes):
    """``arch: factorised`` with ``factorised.backbone: finetune``: the shot encoder's backbone and
    the temporal residual train together on the scene pairs' pixels (the joint encoder's stream and
    scene-level augmentation, at the backbone's input size); the backbone at
    ``factorised.backbone_lr`` × the learning rate. Saved as the trained backbone's folder plus
    ``temporal.safetensors``."""

    def __init__(self, cfg: Config, n: int):
        super().__init__(cfg, n)
        self.backbone_dir = self.run_dir / "shot_encoder"
        if not (self.backbone_dir / "DONE.json").is_file():
            raise ConfigError(f"scene_encoder.factorised.backbone=finetune trains the shot encoder's backbone: "
                              f"{self.backbone_dir}/DONE.json is missing (run train-shot-encoder first; on imported "
                              "shot features only factorised.backbone=frozen works)")
        meta = read_model_config(self.backbone_dir)
        from movies2scenes.models.folder import vit_config_of

        self.vit = vit_config_of(meta, self.backbone_dir / "config.json")
        self.size = self.vit.img_size  # frames are read at the backbone's size

    def inputs(self) -> list[Path]:
        return [self.scene_dir / "DONE.json", self.backbone_dir / "DONE.json"]

    def input_stamp(self) -> str:
        return ""

    def encoder(self) -> torch.nn.Module:
        from movies2scenes.models.factorised import FactorisedSceneEncoder, TemporalResidual
        from movies2scenes.models.folder import load_vit

        f = self.cfg.scene_encoder.factorised
        backbone = load_vit(self.backbone_dir).train().requires_grad_(True)
        temporal = TemporalResidual(backbone.num_features, self.n, f.depth, f.heads, f.mlp_ratio, width=f.width)
        return FactorisedSceneEncoder(backbone, temporal, self.vit.img_size, freeze_backbone=False)

    def param_groups(self, model: MoCo):
        backbone = [p for n, p in model.named_parameters() if n.startswith("encoder_q.backbone.")]
        rest = [p for n, p in model.named_parameters() if not n.startswith("encoder_q.backbone.")]
        tr, f = self.cfg.scene_encoder.train, self.cfg.scene_encoder.factorised
        return [{"params": rest}, {"params": backbone, "lr": tr.lr * f.backbone_lr}]

    def describe(self) -> str:
        f = self.cfg.scene_encoder.factorised
        return f"factorised, fine-tuned {self.vit.arch} (lr × {f.backbone_lr}), depth {f.depth}, width {f.width}"

    def save(self, encoder_q, out: Path) -> list[str]:
        from movies2scenes.models.factorised import TEMPORAL_FILE, save_temporal

        sc = self.cfg.scene_encoder
        temporal = save_temporal(encoder_q.temporal, out)
        save_vit(encoder_q.backbone, self.vit, out, stage=STAGE, moco=asdict(sc.moco), kind="scene",
                 arch="factorised", shots_per_scene=self.n, temporal=temporal, backbone="finetuned")
        return [*MODEL_FILES, TEMPORAL_FILE]


def scene_source(cfg: Config, n: int) -> JointScenes:
    sc = cfg.scene_encoder
    if sc.arch == "joint":
        return JointScenes(cfg, n)
    return (FinetunedScenes if sc.factorised.backbone == "finetune" else FactorisedScenes)(cfg, n)


def _run(cfg: Config, force: bool = False, exclusive: bool = True) -> int:
    from accelerate.utils import set_seed

    started = time.time()
    run_dir = Path(cfg.run_dir)
    scene_dir, out = run_dir / "scene_pairs", run_dir / "scene_encoder"
    sc, tr = cfg.scene_encoder, cfg.scene_encoder.train
    chash = config_hash({"scene_encoder": scene_encoder_settings(sc), "seed": cfg.seed})
    if not (scene_dir / "DONE.json").is_file():
        stage_input_hash(scene_dir / "DONE.json")  # the error naming the missing stage
    n = int(read_json(scene_dir / "DONE.json").get("shots_per_scene", 0)) or cfg.scene_pairs.shots_per_scene
    source = scene_source(cfg, n)
    input_hash = stage_input_hash(*source.inputs()) + source.input_stamp()
    if not force and is_done(out, chash, input_hash):
        print(f"train-scene-encoder: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    if exclusive:
        remove_stale_tmp(out)

    accelerator = make_accelerator(tr, out / "logs")
    world, rank = accelerator.num_processes, accelerator.process_index
    if tr.batch_size % world:
        raise ConfigError(f"scene_encoder.train.batch_size {tr.batch_size} is not divisible by the "
                          f"{world} processes")
    source.place(rank, world, tr.batch_size // world)
    num_pairs = source.num_pairs
    steps_per_epoch = num_pairs // tr.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{num_pairs} scene pairs are too few for one batch of {tr.batch_size}: lower "
                          "scene_encoder.train.batch_size or mine more pairs")
    total = tr.max_steps or tr.epochs * steps_per_epoch
    warmup = int(tr.warmup_epochs * steps_per_epoch)

    set_seed(cfg.seed)  # identical initial weights on every rank
    model = MoCo(source.encoder(), sc.moco.dim, sc.moco.mlp_hidden, sc.moco.queue_size,
                 sc.moco.momentum, sc.moco.temperature, seed=cfg.seed).to(accelerator.device)
    optimizer = make_optimizer(source.param_groups(model), tr)  # fused AdamW when the model is on CUDA
    scheduler = warmup_cosine(optimizer, warmup, total)
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler's state lives in progress.json
    forward = model
    if sc.compile and accelerator.device.type == "cuda":
        forward = torch.compile(model)

    ckpt_dir = out / "checkpoints"
    stamp = f"{chash}:{input_hash}"
    step, last_ckpt, resumed = resume(accelerator, ckpt_dir, stamp, force, "train-scene-encoder", total, scheduler)
    accelerator.init_trackers("scene_encoder", config={"lr": tr.lr, "batch_size": tr.batch_size,
                                                       "arch": source.describe(), "steps": total})
    monitor = source.monitor(set(scene_pair_movies(scene_dir))) if tr.knn_every and accelerator.is_main_process else None
    keeper = source.keeper(ckpt_dir, stamp) if monitor is not None else None
    step, loss_value, logged = moco_loop(accelerator, model, optimizer, scheduler, source.batches, step=step,
                                         total=total, steps_per_epoch=steps_per_epoch, tr=tr, ckpt_dir=ckpt_dir,
                                         stamp=stamp, last_ckpt=last_ckpt, desc="scene encoder", unit="scenes",
                                         forward=forward, monitor=monitor, resumed=resumed, keep_best=keeper)

    if accelerator.is_main_process:
        from safetensors.torch import save_file

        inner = accelerator.unwrap_model(model)
        kept = {"rule": "last", "step": step}
        if keeper is not None and keeper.step is not None:
            keeper.restore(inner.encoder_q)  # the drift guard: the kNN monitor's best step (0 = the mean)
            kept = {"rule": "knn", "step": keeper.step, "knn_top1": keeper.top1, "last_step": step}
        elif sc.arch == "factorised" and sc.factorised.keep == "knn":
            print("train-scene-encoder: warning: no kNN monitor (knn_every = 0 or fewer than 2 probe movies); "
                  "keeping the last step, not the kNN-chosen one", file=sys.stderr)
        outputs = source.save(inner.encoder_q, out)
        save_file({k: v.detach().cpu().contiguous() for k, v in inner.head_q.state_dict().items()},
                  str(out / "head.safetensors"))
        write_json(out / "metrics.json", {"steps": step, "final_loss": loss_value, "steps_per_epoch": steps_per_epoch,
                                          "scene_pairs": num_pairs, "processes": world,
                                          **({"kept": kept} if sc.arch == "factorised" else {}),
                                          **learning_metrics(logged, sc.moco.queue_size, monitor)})
        pretrained_on = write_pretraining_movies(out, scene_pair_movies(scene_dir))
        write_done(out, STAGE, chash, input_hash, {"steps": step, "epochs": step / steps_per_epoch,
                                                   "scene_pairs": num_pairs}, started, outputs=outputs,
                   final_loss=loss_value, pretraining_movies=pretrained_on)
        print(f"train-scene-encoder: {step} steps, final loss {loss_value:.4f} → {out}"
              + (f" (kept step {kept['step']}: {kept['rule']})" if sc.arch == "factorised" else ""))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it closes the process group
    return 0
