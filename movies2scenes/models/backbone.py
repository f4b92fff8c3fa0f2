"""Image backbones beyond our own ViTs, and starting weights from a file.

``create_backbone(cfg)`` builds, without downloading anything:

* a timm ViT (``vit_*``) — exactly :func:`.vit.create_vit` (the only kind the *scene* encoder can
  be: it lays n·k frames side by side and interpolates the ViT's positional embedding);
* any other timm model by name (``resnet50``, ``mobilenetv2_100``, ``convnext_tiny`` …), headless
  (``num_classes=0``: the pooled feature);
* a torchvision classification model, ``torchvision.<name>`` (``torchvision.mobilenet_v2``,
  ``torchvision.resnet50``), its last classifier layer replaced by the identity — so torchvision's
  own state dicts load into it key for key.

Every backbone has ``num_features`` (the pooled width), which is all MoCo and feature extraction need.

``load_pretrained(model, path)`` loads a weights file into it: a safetensors file (timm's or any
name → tensor file) or a PyTorch state dict read with ``torch.load(weights_only=True)`` (never a
pickle of arbitrary objects). The classifier weights of an ImageNet checkpoint are dropped (the
backbone has none); a ViT's positional embedding is resampled to our image size (timm's
``resample_abs_pos_embed``); anything else that does not fit — missing keys, unexpected keys,
shapes — is a :class:`.weights.ModelFileError` listing them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import ViTConfig
from .vit import create_vit
from .weights import ModelFileError, shape_mismatches

TORCHVISION = "torchvision."
HEAD_KEYS = ("fc.", "classifier.", "head.", "heads.")  # classification heads of timm / torchvision models


def is_vit(arch: str) -> bool:
    import timm

    return "vit" in arch and timm.is_model(arch)


def create_backbone(cfg: ViTConfig) -> nn.Module:
    """A randomly initialised, headless backbone for ``cfg.arch`` (see module doc)."""
    import timm

    arch = cfg.arch
    if arch.startswith(TORCHVISION):
        import torchvision

        name = arch[len(TORCHVISION):]
        if name not in torchvision.models.list_models(torchvision.models):
            raise ValueError(f"model arch {arch!r}: torchvision has no classification model {name!r}")
        model = torchvision.models.get_model(name, weights=None)
        model.num_features = _drop_classifier(model, arch)
        return model
    if is_vit(arch):
        return create_vit(cfg)
    if not timm.is_model(arch):
        raise ValueError(f"model arch {arch!r} is neither a timm model nor torchvision.<name>")
    return timm.create_model(arch, pretrained=False, num_classes=0)


def _drop_classifier(model: nn.Module, arch: str) -> int:
    """Replace the last Linear of the model's classifier (``fc``, ``classifier``, ``heads``) by the
    identity; returns its input width (the pooled feature's)."""
    for attr in ("fc", "classifier", "heads", "head"):
        part = getattr(model, attr, None)
        if isinstance(part, nn.Linear):
            setattr(model, attr, nn.Identity())
            return part.in_features
        if isinstance(part, nn.Sequential):
            for i in range(len(part) - 1, -1, -1):
                if isinstance(part[i], nn.Linear):
                    width = part[i].in_features
                    part[i] = nn.Identity()
                    return width
    raise ValueError(f"model arch {arch!r}: no classifier layer (fc / classifier / heads) to remove")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """name → tensor from a safetensors file or a PyTorch state dict (``weights_only=True``; a
    checkpoint that wraps it in ``state_dict`` / ``model`` is unwrapped)."""
    from ..pretrained import weights_path

    path = weights_path(str(path))  # a shipped name (imagenet-mobilenet-v2) becomes its checked file
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors' own error types
            raise ModelFileError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickler refusal (arbitrary objects) or a damaged file
        raise ModelFileError(f"{path}: not a plain PyTorch state dict that loads with weights_only=True "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: expected a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Load ``path`` into ``model`` (see module doc). Returns the names of the file's tensors that
    were left out because they belong to a classification head."""
    state = read_state_dict(path)
    own = model.state_dict()
    dropped = [k for k in state if k not in own and k.startswith(HEAD_KEYS)]
    state = {k: v for k, v in state.items() if k not in dropped}
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape and hasattr(model, "patch_embed"):
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        state["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(model.patch_embed.grid_size),
                                                    num_prefix_tokens=prefix)
    bad = shape_mismatches({k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in state.items()})
    if bad:
        raise ModelFileError(f"{path} does not fit the configured model: " + "; ".join(bad[:10])
                             + (f"; ... ({len(bad)} in all)" if len(bad) > 10 else ""))
    model.load_state_dict(state)
    return dropped
