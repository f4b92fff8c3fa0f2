"""timm ViT backbones: one factory for every encoder, and their safetensors + json form.

``create_vit(cfg)`` builds any timm ViT by name at any image/patch size, with depth/width overrides
for tiny demo models; ``num_classes=0`` so the output is the pooled (class-token) feature.
``save_vit``/``load_vit`` write and read a model folder — no pickle:

* ``model.safetensors`` — the timm model's own state dict;
* ``config.json`` — **timm's own format** (``architecture``, ``num_classes``, ``num_features``,
  ``model_args``, ``pretrained_cfg`` with input size, mean, std, interpolation and crop), so
  ``timm.create_model("local-dir:<folder>", pretrained=True)`` builds and loads it and
  ``timm.data.resolve_model_data_config(model)`` gives the preprocessing it was trained with;
* ``movies2scenes.json`` — our own settings (the ``vit`` section, stage, MoCo, scene settings).

Folders written before this split (one config.json holding everything) are still read.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError, ViTConfig

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


SETTINGS_FILE = "movies2scenes.json"  # our settings, beside timm's config.json


def timm_config(cfg: ViTConfig, num_features: int) -> dict:
    """A timm ``config.json`` (the format timm's ``push_to_hf_hub`` writes) for this ViT. The
    preprocessing is ours (:func:`movies2scenes.data.eval_transform`): short side to ``img_size``
    (bilinear), centre crop to ``img_size`` (``crop_pct`` 1), ImageNet mean/std."""
    from .backbone import is_vit

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


class ModelFileError(ConfigError):
    """A saved model folder whose config.json or weights cannot be used; names the file and why."""


def _json_object(f: Path, folder: str | Path) -> dict:
    try:
        meta = json.loads(f.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ModelFileError(f"{f}: not found (is {folder} a saved or exported model folder?)") from None
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
        from .backbone import is_vit

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


def weight_shapes(file: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise ModelFileError(f"{file}: not found") from None
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise ModelFileError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def shape_mismatches(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> list[str]:
    """Human-readable differences between two name → shape maps (empty when they agree)."""
    out = [f"missing {k} {v}" for k, v in expected.items() if k not in found]
    out += [f"unexpected {k} {v}" for k, v in found.items() if k not in expected]
    out += [f"{k}: config gives {v}, file has {found[k]}" for k, v in expected.items()
            if k in found and tuple(found[k]) != tuple(v)]
    return out


def checked_vit_config(path: str | Path, meta: dict | None = None) -> ViTConfig:
    """The ViTConfig of a saved model folder, checked against its weights *before* anything is
    allocated: a hostile or damaged config.json (``depth=100000``, ``embed_dim=300000``) is an error
    naming the mismatching tensors, never an attempt to build it. The architecture is instantiated
    on the meta device (no memory) only after its depth matches the file's."""
    from .backbone import create_backbone, is_vit

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

    from .backbone import create_backbone

    path = Path(path)
    model = create_backbone(checked_vit_config(path))  # a ViT, or (shot encoders) any backbone
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# scenes: n shots × k frames through one ViT


class SceneViT(nn.Module):
    """A timm ViT that reads a whole scene: input (B, n, k, C, H, W), n shots × k frames.

    Every frame is cut into the ViT's N = gh × gw patches by its own patch embedding; the n·k
    frames are laid side by side as one wide image of gh × (n·k·gw) patches (frame order: shot
    0's k frames, then shot 1's, ...), and the positional embedding learned for one frame's gh × gw
    grid is resampled to that grid with ``timm.layers.resample_abs_pos_embed`` (2-D bicubic, as for
    a ViT resolution change). One class token, then all N·n·k patch tokens, then timm's own blocks,
    norm and class-token pooling. The same weights take any n and k; with n = k = 1 nothing is
    resampled and the output equals the plain timm ViT's on that frame. (B, C, H, W) input is
    read as n = k = 1.

    ``self.vit`` *is* the timm model (state-dict keys are timm's), so the single-frame backbone
    loads in timm directly.
    """

    def __init__(self, vit: nn.Module, grad_checkpointing: bool = False):
        super().__init__()
        for name, ok in (("cls_token", getattr(vit, "cls_token", None) is not None),
                         ("no reg tokens", not getattr(vit, "reg_token", None) is not None),
                         ("class token in pos_embed", not getattr(vit, "no_embed_class", False)),
                         ("absolute pos_embed", getattr(vit, "pos_embed", None) is not None),
                         ("token pooling", getattr(vit, "global_pool", "token") == "token")):
            if not ok:
                raise ValueError(f"SceneViT needs a timm ViT with {name}")
        self.vit = vit
        self.num_features = vit.num_features
        self.grad_checkpointing = grad_checkpointing

    @property
    def input_size(self) -> int:
        """The side of the square view each frame is read at (px)."""
        return int(self.vit.patch_embed.img_size[0])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.grid_size)

    def pos_embed(self, frames: int) -> torch.Tensor:
        """(1, 1 + N·frames, D): the class position, then the resampled patch positions."""
        from timm.layers import resample_abs_pos_embed

        gh, gw = self.grid
        return resample_abs_pos_embed(self.vit.pos_embed, new_size=[gh, gw * frames], old_size=[gh, gw],
                                      num_prefix_tokens=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, k, C, H, W) → (B, 1 + N·n·k, D) after the blocks and final norm."""
        if x.ndim == 4:
            x = x[:, None, None]
        if x.ndim != 6:
            raise ValueError(f"SceneViT input must be (B, n, k, C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        b, n, k = x.shape[:3]
        gh, gw = self.grid
        t = self.vit.patch_embed(x.flatten(0, 2))  # (B·n·k, N, D)
        d = t.shape[-1]
        t = t.reshape(b, n * k, gh, gw, d).permute(0, 2, 1, 3, 4).reshape(b, gh * n * k * gw, d)
        t = torch.cat([self.vit.cls_token.expand(b, -1, -1), t], dim=1) + self.pos_embed(n * k)
        t = self.vit.norm_pre(self.vit.patch_drop(self.vit.pos_drop(t)))
        if self.grad_checkpointing and self.training:
            from torch.utils.checkpoint import checkpoint

            for blk in self.vit.blocks:
                t = checkpoint(blk, t, use_reentrant=False)
        else:
            t = self.vit.blocks(t)
        return self.vit.norm(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_features): the pooled scene embedding (timm's head path, no classifier)."""
        return self.vit.forward_head(self.tokens(x))


def create_scene_vit(cfg: ViTConfig, grad_checkpointing: bool = False) -> SceneViT:
    return SceneViT(create_vit(cfg), grad_checkpointing)
