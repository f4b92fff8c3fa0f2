"""The exported, frozen scene encoder: ``model.safetensors`` + ``config.json`` + ``README.md``.

The weights are the timm ViT's own state dict (``SceneViT.vit``), so the single-frame backbone
loads in plain timm::

    timm.create_model(cfg["architecture"], pretrained=True, **cfg["timm_kwargs"],
                      pretrained_cfg_overlay=dict(file=f"{path}/model.safetensors"))

and the scene encoder (any number of shots n and frames per shot k) with
``movies2scenes.load_scene_encoder(path)``. Inputs: RGB in [0, 1], normalised with ``mean``/``std``
from config.json, frames resized (short side) and centre-cropped to ``input_size``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .models.vit import ModelFileError, SceneViT, checked_vit_config, create_vit, read_model_config, vit_kwargs
from .store import atomic_path, write_json


def export_scene_encoder(encoder_dir: str | Path, out_dir: str | Path, card: dict) -> dict:
    """Copy a trained scene encoder into ``out_dir`` with a config a user can load from, and a model
    card. ``card``: name, data summary, config and metrics (free-form dicts). Returns config.json."""
    src, out = Path(encoder_dir), Path(out_dir)
    meta = json.loads((src / "config.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        shutil.copyfile(src / "model.safetensors", tmp)
    config = {
        "name": card.get("name", "movies2scenes-scene-encoder"),
        "architecture": meta["architecture"],
        "timm_kwargs": meta["timm_kwargs"],
        "vit": meta["vit"],
        "num_features": meta["num_features"],
        "input_size": meta["input_size"],
        "mean": meta["mean"],
        "std": meta["std"],
        "shots_per_scene": meta.get("shots_per_scene", 9),
        "frames_per_shot": card.get("frames_per_shot", 1),
        "input_layout": "(B, n shots, k frames, 3, H, W); (B, 3, H, W) = one frame",
        "movies2scenes": card.get("version", ""),
    }
    write_json(out / "config.json", config)
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(model_card(config, card), encoding="utf-8")
    return config


def model_card(config: dict, card: dict) -> str:
    def block(title: str, data) -> str:
        return f"## {title}\n\n```json\n{json.dumps(data, indent=2, sort_keys=True)}\n```\n"

    n, k = config["shots_per_scene"], config["frames_per_shot"]
    return "\n".join([
        f"# {config['name']}",
        "",
        "A frozen **scene encoder** pretrained with Movies2Scenes (Chen et al., CVPR 2023) by the",
        "`movies2scenes` pipeline: a timm ViT that reads n shots × k keyframes as one token sequence",
        "(positional embedding resampled from one frame's grid), trained by MoCo on similar scene pairs",
        "mined from similar movies. Output: one embedding per scene (the class token, no projection head).",
        "",
        f"* architecture: `{config['architecture']}` {config['timm_kwargs']}",
        f"* trained on scenes of n = {n} shots × k = {k} keyframe(s), {config['input_size'][1]} px;"
        " any n and k work at inference",
        f"* embedding dimension: {config['num_features']}",
        "",
        "## Use",
        "",
        "```python",
        "from movies2scenes import load_scene_encoder",
        "encoder = load_scene_encoder('PATH')          # frozen, eval mode",
        "emb = encoder(scenes)                          # scenes: (B, n, k, 3, H, W), normalised",
        "```",
        "",
        "Single-frame backbone in plain timm:",
        "",
        "```python",
        "import timm",
        f"m = timm.create_model('{config['architecture']}', pretrained=True, "
        + ", ".join(f"{key}={value!r}" for key, value in config["timm_kwargs"].items())
        + ", pretrained_cfg_overlay=dict(file='PATH/model.safetensors'))",
        "```",
        "",
        "Or from the command line: `m2s embed VIDEO... --encoder PATH --out scenes.parquet`.",
        "",
        block("Pretraining data", card.get("data", {})),
        block("Training configuration", card.get("config", {})),
        block("Metrics", card.get("metrics", {})),
        "## Limitations",
        "",
        "Embeddings reflect the catalogue and metadata it was trained on; movie-level similarity",
        "signals (co-watch, genre) carry their biases into the scene space. Check the metrics above",
        "on your own labelled data before relying on it.",
        "",
    ])


def load_scene_encoder(path: str | Path, device: str | torch.device = "cpu") -> SceneViT:
    """The exported (or trained) scene encoder at ``path``, frozen and in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    model = SceneViT(create_vit(checked_vit_config(path)))  # config checked against the weights first
    model.vit.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval().requires_grad_(False)


def load_timm_backbone(path: str | Path):
    """The single-frame backbone through timm's own pretrained loader (no movies2scenes code)."""
    import timm

    meta = read_model_config(path)
    cfg = checked_vit_config(path, meta)
    if meta.get("architecture") != cfg.arch or meta.get("timm_kwargs") != vit_kwargs(cfg):
        raise ModelFileError(f"{Path(path) / 'config.json'}: architecture/timm_kwargs disagree with its vit section")
    return timm.create_model(meta["architecture"], pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(Path(path) / "model.safetensors")),
                             **meta["timm_kwargs"]).eval()
