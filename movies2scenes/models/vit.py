"""timm ViT backbones: one factory for every encoder, and their safetensors + json form.

``create_vit(cfg)`` builds any timm ViT by name at any image/patch size, with depth/width overrides
for tiny demo models; ``num_classes=0`` so the output is the pooled (class-token) feature.
``save_vit``/``load_vit`` write and read ``model.safetensors`` + ``config.json`` — no pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..config import ViTConfig

# Inputs are normalised like ImageNet-trained timm ViTs (kept in config.json for users).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def vit_kwargs(cfg: ViTConfig) -> dict:
    kw = {"img_size": cfg.img_size, "patch_size": cfg.patch_size, "num_classes": 0}
    for name in ("embed_dim", "depth", "num_heads"):
        if getattr(cfg, name):
            kw[name] = getattr(cfg, name)
    return kw


def create_vit(cfg: ViTConfig) -> nn.Module:
    """A randomly initialised timm ViT (never downloads weights)."""
    import timm

    if not timm.is_model(cfg.arch) or "vit" not in cfg.arch:
        raise ValueError(f"model arch {cfg.arch!r} is not a timm ViT (e.g. vit_base_patch16_224)")
    return timm.create_model(cfg.arch, pretrained=False, **vit_kwargs(cfg))


def vit_config_json(cfg: ViTConfig, model: nn.Module, **extra) -> dict:
    return {
        "architecture": cfg.arch,
        "timm_kwargs": vit_kwargs(cfg),
        "vit": asdict(cfg),
        "num_features": int(model.num_features),
        "input_size": [3, cfg.img_size, cfg.img_size],
        "mean": list(MEAN),
        "std": list(STD),
        **extra,
    }


def save_vit(model: nn.Module, cfg: ViTConfig, out_dir: str | Path, **extra) -> None:
    """``out_dir/model.safetensors`` + ``out_dir/config.json`` (written atomically)."""
    from safetensors.torch import save_file

    from ..store import atomic_path, write_json

    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(out / "config.json", vit_config_json(cfg, model, **extra))


def load_vit(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen encoder saved by :func:`save_vit`, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / "config.json").read_text())
    model = create_vit(ViTConfig(**meta["vit"]))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval().requires_grad_(False)
