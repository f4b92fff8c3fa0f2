"""What the scene encoder trains on, per architecture (``scene_encoder.arch``): a *scene source*
says what the encoder is, what it reads, how its batches are made and how it is saved.

* :class:`JointScenes` (``joint``, the paper's): n shots × k keyframes through one ``SceneViT``,
  streamed from the training shards (``data.ScenePairStream``);
* :class:`FactorisedScenes` (``factorised``): the frozen shot backbone's features, read as windows
  of ``shot_features/`` (no decoding), through a ``models.factorised.TemporalHead`` (the mean of
  the shot features + a zero-initialised residual). Its drift guard (``factorised.keep: knn``) keeps
  the weights of the kNN monitor's best evaluation on held-out movies, step 0 (= the mean) included
  (``keep: order``: the best held-out order accuracy among evaluations at least step 0's kNN top-1);
* :class:`FinetunedScenes` (``factorised`` with ``factorised.backbone: finetune``).

The stage ``train-scene-encoder`` trains whichever :func:`scene_source` returns.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .config import Config
from .errors import ConfigError
from .data import FeaturePairBatches, ScenePairStream, epoch_scene_pairs, loader_workers, scene_pair_keys, train_transform
from .integrity import read_done
from .layout import MODEL_FILES, RunLayout
from .models.folder import SETTINGS_FILE, read_model_config, save_vit
from .models.moco import MoCo
from .models.vit import create_scene_vit
from .catalogue import eval_only_movies
from .monitor import make_feature_knn_monitor, make_knn_monitor, make_order_monitor
from .store import atomic_path, write_json
from .training import BestByKnn, BestByOrder

ORDER_MOVIES = 4  # keep: order — the order monitor reads this many times the kNN monitor's movies


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

        shot_dir = RunLayout(cfg.run_dir).folder("shot_encoder")
        if not (shot_dir / "model.safetensors").is_file():
            raise ConfigError(f"scene_encoder.init=shot_encoder: {shot_dir}/model.safetensors does not exist")
        shot_vit = read_model_config(shot_dir)["vit"]
        if shot_vit != asdict(sc.model):
            raise ConfigError(f"scene_encoder.init=shot_encoder needs scene_encoder.model equal to the shot "
                              f"encoder's ({shot_vit}), got {asdict(sc.model)}")
        encoder.vit.load_state_dict(load_file(str(shot_dir / "model.safetensors")))
    return encoder


class JointScenes:
    """``arch: joint``: the paper's scene ViT over the pixels of the training shards."""

    def __init__(self, cfg: Config, n: int):
        self.cfg, self.n = cfg, n
        self.run = RunLayout(cfg.run_dir)
        self.scene_dir = self.run.folder("scene_pairs")
        self.shards = scene_pair_keys(self.scene_dir)
        self.num_pairs = sum(len(v) for v in self.shards.values())
        self.rank, self.world, self.local_batch = 0, 1, 1
        self.size = cfg.scene_encoder.model.img_size  # the side each frame is read at (px)

    def inputs(self) -> list[str]:
        """The stage folders whose DONE records are this source's inputs."""
        return ["scene_pairs"] + (["shot_encoder"] if self.cfg.scene_encoder.init == "shot_encoder" else [])

    def starting_weights(self) -> str:
        """``scene_encoder.init`` where it applies (a weights file's hash is then an input)."""
        return self.cfg.scene_encoder.init

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
        if not (self.run.folder("shots") / "index.parquet").is_file():
            return None
        return make_knn_monitor(self.run.folder("shots"), train_movies, self.size, tr.knn_movies, tr.knn_per_movie,
                                self.cfg.seed, shots_per_item=self.n, eval_only=eval_only_movies(self.cfg.catalogue))

    def keeper(self, ckpt_dir: Path, stamp: str, train_movies: set[str]) -> BestByKnn | None:
        """The drift guard (factorised encoders with ``factorised.keep: knn``), else None."""
        sc = self.cfg.scene_encoder
        if sc.arch != "factorised" or sc.factorised.keep == "last":
            return None
        return BestByKnn(ckpt_dir / "best-knn.safetensors", stamp)

    def param_groups(self, model: MoCo):
        return model.parameters()

    def terms(self):
        """A factory of the training terms beside the pair loss (encoder → PretextTerms), or None:
        the pair loss alone (the joint encoder; the factorised one with every term's weight 0)."""
        return None

    def describe(self) -> str:
        return self.cfg.scene_encoder.model.arch

    def save(self, encoder_q, out: Path, stage: str) -> list[str]:
        sc = self.cfg.scene_encoder
        save_vit(encoder_q.vit, sc.model, out, stage=stage, moco=asdict(sc.moco), kind="scene",
                 shots_per_scene=self.n)
        return list(MODEL_FILES)


class FactorisedScenes(JointScenes):
    """``arch: factorised`` (frozen backbone): a temporal residual over windows of the shot
    features; the saved encoder is the shot backbone that made them plus ``temporal.safetensors``."""

    def __init__(self, cfg: Config, n: int):
        from movies2scenes.features import ShotFeatures

        super().__init__(cfg, n)
        self.feature_dir = self.run.folder("shot_features")
        self.backbone_dir = self.run.folder("shot_encoder")
        if not self.run.is_done("shot_features"):
            raise ConfigError(f"scene_encoder.arch=factorised reads shot features: {self.run.done('shot_features')} "
                              "is missing (run extract-shot-features or import-shot-features first)")
        self.imported = read_done(self.run.done("shot_features")).get("imported_from")
        self.features = ShotFeatures(self.feature_dir)
        try:
            self.pairs = FeaturePairBatches(self.scene_dir, self.features, n, cfg.scene_encoder.factorised.context)
        except ValueError as e:
            raise ConfigError(f"{e} (the scene pairs were mined on other shot features: rerun mine-scene-pairs)") from None

    def inputs(self) -> list[str]:
        return ["scene_pairs", "shot_features"]

    def starting_weights(self) -> str:
        return "random"

    def encoder(self) -> torch.nn.Module:
        from movies2scenes.models.factorised import temporal_head

        f = self.cfg.scene_encoder.factorised
        return temporal_head(f.head, self.features.dim, self.n, f.depth, f.heads, f.mlp_ratio, f.width, f.context)

    def batches(self, epoch: int, start: int):
        return self.pairs.epoch(self.recipe(epoch), self.local_batch, self.rank, self.world, start)

    def terms(self):
        from movies2scenes.models.pretext import PretextTerms

        f = self.cfg.scene_encoder.factorised
        if not (f.msm or f.order_negatives or f.boundary) and f.pairs == 1:
            return None
        return lambda encoder: PretextTerms(encoder.width, encoder.num_features, f.msm, f.mask_ratio, f.msm_loss,
                                            f.order_negatives, f.boundary, pairs=f.pairs)

    def monitor(self, train_movies: set[str]):
        tr = self.cfg.scene_encoder.train
        return make_feature_knn_monitor(self.features, train_movies, tr.knn_movies, tr.knn_per_movie,
                                        self.cfg.seed, self.n, eval_only=eval_only_movies(self.cfg.catalogue),
                                        context=self.cfg.scene_encoder.factorised.context)

    def keeper(self, ckpt_dir: Path, stamp: str, train_movies: set[str]) -> BestByKnn | None:
        """The drift guard: ``keep: knn`` (:class:`BestByKnn`) or ``keep: order`` (:class:`BestByOrder`
        with an order monitor on ``4 × knn_movies`` probe movies, held-out first), else None."""
        f, tr = self.cfg.scene_encoder.factorised, self.cfg.scene_encoder.train
        if f.keep != "order":
            return super().keeper(ckpt_dir, stamp, train_movies)
        order = make_order_monitor(self.features, train_movies, ORDER_MOVIES * tr.knn_movies, self.n,
                                   self.cfg.seed, eval_only_movies(self.cfg.catalogue), f.context)
        if order is None:
            raise ConfigError("scene_encoder.factorised.keep=order: fewer than 2 probe movies have a window for the "
                              "order monitor (use keep: knn)")
        return BestByOrder(ckpt_dir / "best-order.safetensors", stamp, order)

    def describe(self) -> str:
        f = self.cfg.scene_encoder.factorised
        terms = [f"{k} {getattr(f, k):g}" for k in ("msm", "order_negatives", "boundary") if getattr(f, k)]
        terms += [f"pairs {f.pairs:g}"] if f.pairs != 1 else []
        head = ("" if f.head == "transformer" else f", {f.head} head") + (f", in {f.context}-shot context"
                                                                         if f.context else "")
        return (f"factorised ({self.features.dim}-d shot features{head}, depth {f.depth}, width {f.width}"
                + (f"; terms: {', '.join(terms)}" if terms else "") + ")")

    def save(self, encoder_q, out: Path, stage: str) -> list[str]:
        import shutil

        from movies2scenes.models.factorised import TEMPORAL_FILE, save_temporal

        sc = self.cfg.scene_encoder
        temporal = save_temporal(encoder_q, out)
        settings = {"stage": stage, "moco": asdict(sc.moco), "kind": "scene", "arch": "factorised",
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
        self.backbone_dir = self.run.folder("shot_encoder")
        if not self.run.is_done("shot_encoder"):
            raise ConfigError(f"scene_encoder.factorised.backbone=finetune trains the shot encoder's backbone: "
                              f"{self.run.done('shot_encoder')} is missing (run train-shot-encoder first; on imported "
                              "shot features only factorised.backbone=frozen works)")
        meta = read_model_config(self.backbone_dir)
        from movies2scenes.models.folder import vit_config_of

        self.vit = vit_config_of(meta, self.backbone_dir / "config.json")
        self.size = self.vit.img_size  # frames are read at the backbone's size

    def inputs(self) -> list[str]:
        return ["scene_pairs", "shot_encoder"]

    def starting_weights(self) -> str:
        return "random"

    def encoder(self) -> torch.nn.Module:
        from movies2scenes.models.factorised import FactorisedSceneEncoder, temporal_head
        from movies2scenes.models.folder import load_vit

        f = self.cfg.scene_encoder.factorised
        backbone = load_vit(self.backbone_dir).train().requires_grad_(True)
        temporal = temporal_head(f.head, backbone.num_features, self.n, f.depth, f.heads, f.mlp_ratio, f.width)
        return FactorisedSceneEncoder(backbone, temporal, self.vit.img_size, freeze_backbone=False)

    def param_groups(self, model: MoCo):
        backbone = [p for n, p in model.named_parameters() if n.startswith("encoder_q.backbone.")]
        rest = [p for n, p in model.named_parameters() if not n.startswith("encoder_q.backbone.")]
        tr, f = self.cfg.scene_encoder.train, self.cfg.scene_encoder.factorised
        return [{"params": rest}, {"params": backbone, "lr": tr.lr * f.backbone_lr}]

    def describe(self) -> str:
        f = self.cfg.scene_encoder.factorised
        return f"factorised, fine-tuned {self.vit.arch} (lr × {f.backbone_lr}), depth {f.depth}, width {f.width}"

    def save(self, encoder_q, out: Path, stage: str) -> list[str]:
        from movies2scenes.models.factorised import TEMPORAL_FILE, save_temporal

        sc = self.cfg.scene_encoder
        temporal = save_temporal(encoder_q.temporal, out)
        save_vit(encoder_q.backbone, self.vit, out, stage=stage, moco=asdict(sc.moco), kind="scene",
                 arch="factorised", shots_per_scene=self.n, temporal=temporal, backbone="finetuned")
        return [*MODEL_FILES, TEMPORAL_FILE]


def scene_source(cfg: Config, n: int) -> JointScenes:
    sc = cfg.scene_encoder
    if sc.arch == "joint":
        return JointScenes(cfg, n)
    return (FinetunedScenes if sc.factorised.backbone == "finetune" else FactorisedScenes)(cfg, n)
