"""The saved model folder — the format every trained stage and the export write, no pickle:

* ``model.safetensors`` — the model's own state dict (timm's keys for timm models);
* ``config.json`` — **timm's own format** (``architecture``, ``num_classes``, ``num_features``,
  ``model_args``, ``pretrained_cfg`` with input size, mean, std, interpolation and crop), so
  ``timm.create_model("local-dir:<folder>", pretrained=True)`` builds and loads it and
  ``timm.data.resolve_model_data_config(model)`` gives the preprocessing it was trained with;
* ``movies2scenes.json`` — our own settings (the ``vit`` section, stage, MoCo, scene settings).

Folders written before this split (one config.json holding everything) are still read. Every
reader checks the settings against the weights' shapes *before* building anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN as MEAN
from timm.data import IMAGENET_DEFAULT_STD as STD
from torch import nn

from ..config import ViTConfig
from ..errors import ConfigError
from .backbone import create_backbone, is_vit
from .vit import vit_kwargs
from .weights import ModelFileError, shape_mismatches, weight_shapes

SETTINGS_FILE = "movies2scenes.json"  # our settings, beside timm's config.json


def timm_config(cfg: ViTConfig, num_features: int) -> dict:
    """A timm ``config.json`` (the format timm's ``push_to_hf_hub`` writes) for this ViT. The
    preprocessing is ours (:func:`movies2scenes.data.eval_transform`): short side to ``img_size``
    (bilinear), centre crop to ``img_size`` (``crop_pct`` 1), ImageNet mean/std."""
    vit = is_vit(cfg.arch)
    return {
        "architecture": cfg.arch,
        "num_classes": 0,
        "num_features": int(num_features),
        "global_pool": "token" if vit else "avg",
        "model_args": vit_kwargs(cfg) if vit else {},
        "pretrained_cfg": {
            "input_size": [3, cfg.img_size, cfg.img_size],
            "fixed_input_size": True,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(MEAN),
            "std": list(STD),
            "num_classes": 0,
            **({"first_conv": "patch_embed.proj", "classifier": "head"} if vit else {}),
        },
    }


def save_vit(model: nn.Module, cfg: ViTConfig, out_dir: str | Path, **extra) -> None:
    """``model.safetensors`` + timm's ``config.json`` + ``movies2scenes.json`` (``vit`` section and
    ``extra``) in ``out_dir``, each written atomically."""
    from safetensors.torch import save_file

    from ..store import atomic_path, write_json

    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(out / "config.json", timm_config(cfg, model.num_features))
    write_json(out / SETTINGS_FILE, {"vit": asdict(cfg), **extra})


def _model_folder_hint(folder: Path) -> str:
    """A run directory given for a model folder: name the model folders it holds."""
    inside = [folder / sub for sub in ("export", "scene_encoder", "shot_encoder") if (folder / sub / "config.json").is_file()]
    return f" — it is a run directory: use {inside[0]}" if inside else ""


def _json_object(f: Path, folder: str | Path) -> dict:
    try:
        meta = json.loads(f.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ModelFileError(f"{f}: not found (is {folder} a saved or exported model folder?"
                             + _model_folder_hint(Path(folder)) + ")") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{f}: not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{f}: expected a JSON object, got {type(meta).__name__}")
    return meta


def read_model_config(path: str | Path) -> dict:
    """A model folder's settings as one dict: timm's ``config.json`` updated with our
    ``movies2scenes.json`` (when present; older folders kept everything in config.json), or
    :class:`ModelFileError` naming the file and the reason. A timm config.json whose architecture
    or model_args disagree with our ``vit`` section is an error (someone edited one of them)."""
    path = Path(path)
    meta = _json_object(path / "config.json", path)
    if (path / SETTINGS_FILE).is_file() or "pretrained_cfg" in meta:
        ours = _json_object(path / SETTINGS_FILE, path)
        meta = {**meta, **ours}
        cfg = vit_config_of(meta, path / SETTINGS_FILE)
        args = vit_kwargs(cfg) if is_vit(cfg.arch) else {}
        if meta.get("architecture") != cfg.arch or meta.get("model_args") != args:
            raise ModelFileError(f"{path / 'config.json'}: architecture/model_args "
                                 f"({meta.get('architecture')}, {meta.get('model_args')}) disagree with the vit "
                                 f"section of {path / SETTINGS_FILE} ({cfg.arch}, {args})")
    return meta


def vit_config_of(meta: dict, where: str | Path) -> ViTConfig:
    """The ``vit`` section of a model config.json, type-checked against :class:`ViTConfig`."""
    from ..config import _apply

    cfg = ViTConfig()
    try:
        _apply(cfg, meta.get("vit"), "vit.", str(where))
    except ConfigError as e:
        raise ModelFileError(str(e)) from None
    for name in ("img_size", "patch_size"):
        if getattr(cfg, name) < 1:
            raise ModelFileError(f"{where}: vit.{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("embed_dim", "depth", "num_heads"):
        if getattr(cfg, name) < 0:
            raise ModelFileError(f"{where}: vit.{name} must be >= 0, got {getattr(cfg, name)}")
    return cfg


def checked_vit_config(path: str | Path, meta: dict | None = None) -> ViTConfig:
    """The ViTConfig of a saved model folder, checked against its weights *before* anything is
    allocated: a hostile or damaged config.json (``depth=100000``, ``embed_dim=300000``) is an error
    naming the mismatching tensors, never an attempt to build it. The architecture is instantiated
    on the meta device (no memory) only after its depth matches the file's."""
    path = Path(path)
    meta = read_model_config(path) if meta is None else meta
    cfg = vit_config_of(meta, path / "config.json")
    shapes = weight_shapes(path / "model.safetensors")
    depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    if is_vit(cfg.arch) and cfg.depth and cfg.depth != depth:
        raise ModelFileError(f"{path / 'config.json'}: vit.depth {cfg.depth} but {path / 'model.safetensors'} "
                             f"holds {depth} blocks")
    if cfg.embed_dim and cfg.num_heads and cfg.embed_dim % cfg.num_heads:
        raise ModelFileError(f"{path / 'config.json'}: vit.embed_dim {cfg.embed_dim} is not divisible by "
                             f"vit.num_heads {cfg.num_heads}")
    try:
        with torch.device("meta"):
            skeleton = create_backbone(cfg)
    except Exception as e:
        raise ModelFileError(f"{path / 'config.json'}: cannot build {cfg.arch} from it ({type(e).__name__}: {e})") from None
    bad = shape_mismatches({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, shapes)
    if bad:
        raise ModelFileError(f"{path / 'config.json'} does not match {path / 'model.safetensors'}: "
                             + "; ".join(bad[:8]) + (f"; ... ({len(bad)} in all)" if len(bad) > 8 else ""))
    return cfg


def load_vit(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen encoder saved by :func:`save_vit`, in eval mode (config checked against the
    weights first: :func:`checked_vit_config`)."""
    from safetensors.torch import load_file

    path = Path(path)
    model = create_backbone(checked_vit_config(path))  # a ViT, or (shot encoders) any backbone
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval().requires_grad_(False)
