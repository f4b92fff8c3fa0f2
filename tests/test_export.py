"""The exported scene encoder is a timm-native folder: the standard timm user path (``local-dir:``,
``resolve_model_data_config``, ``create_transform``) works and gives our preprocessing, the model
card has Hub front matter, and our scene settings live beside timm's config in movies2scenes.json."""

from __future__ import annotations

import json
from dataclasses import asdict
import subprocess
import sys

import numpy as np
import pytest
import torch

from movies2scenes.config import ShotsConfig, ViTConfig

TINY = ViTConfig(arch="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)

# Exactly what a timm user types (no movies2scenes import): the model, its data config, its transform.
TIMM_USER = """
import json, sys
import numpy as np, timm, torch
from PIL import Image
m = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
cfg = timm.data.resolve_model_data_config(m)
tf = timm.data.create_transform(**cfg)
img = Image.fromarray(np.load(sys.argv[2]))
with torch.no_grad():
    emb = m(tf(img)[None])
assert "movies2scenes" not in sys.modules
print(json.dumps({"cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                  "x": tf(img).tolist(), "emb": emb[0].tolist()}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from movies2scenes.export import export_scene_encoder
    from movies2scenes.models.folder import save_vit
    from movies2scenes.models.vit import create_scene_vit

    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    save_vit(create_scene_vit(TINY).vit, TINY, tmp / "enc", shots_per_scene=5)
    card = {"name": "tiny", "version": "0.test", "license": "cc-by-4.0", "datasets": ["my-catalogue"],
            "shots": {**asdict(ShotsConfig(min_shot_frames=7, keyframes=2)), "decode_threads": 3},
            "metrics": {"scene_encoder": {"acc1": 0.21875, "steps": 40}},  # a training batch's figure
            "evaluation": {"place": {"metric": "top-1", "encoder": {"linear": 0.75}, "clips": 16},
                           "bad": {"metric": "AP", "encoder": {"linear": float("nan")}}}}
    export_scene_encoder(tmp / "enc", tmp / "export", card)
    return tmp / "export"


def test_timm_user_path_gives_our_model_and_preprocessing(exported, bikes, tmp_path):
    """create_model('local-dir:…') + resolve_model_data_config + create_transform, in a fresh
    interpreter: 32 px, ImageNet mean/std, and the same embedding as our encoder on our eval view."""
    from movies2scenes import load_scene_encoder
    from movies2scenes.data import eval_transform, to_chw
    from movies2scenes.video import iter_frames

    frame = next(iter(iter_frames(bikes, (120, 68))))  # a real frame, not square, larger than 32 px
    np.save(tmp_path / "frame.npy", frame)
    r = subprocess.run([sys.executable, "-c", TIMM_USER, str(exported), str(tmp_path / "frame.npy")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    cfg = got["cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == pytest.approx([0.485, 0.456, 0.406]) and cfg["std"] == pytest.approx([0.229, 0.224, 0.225])
    ours = eval_transform(32)(to_chw(frame))
    theirs = torch.tensor(got["x"])
    assert theirs.shape == ours.shape == (3, 32, 32)
    # PIL's bilinear resize vs torchvision's antialiased tensor resize: the same view up to rounding
    assert (theirs - ours).abs().mean() < 0.02
    encoder = load_scene_encoder(exported)
    with torch.no_grad():
        emb_ours = encoder(ours[None])[0]
        emb_same_input = encoder(theirs[None])[0]
    assert torch.allclose(torch.tensor(got["emb"]), emb_same_input, atol=1e-5)  # same weights, same model
    assert torch.nn.functional.cosine_similarity(torch.tensor(got["emb"]), emb_ours, dim=0) > 0.99


def test_settings_beside_timm_config(exported):
    timm_cfg = json.loads((exported / "config.json").read_text())
    assert set(timm_cfg) >= {"architecture", "num_classes", "num_features", "model_args", "pretrained_cfg"}
    assert "frames_per_shot" not in json.dumps(timm_cfg)  # nothing timm would pass to the model
    ours = json.loads((exported / "movies2scenes.json").read_text())
    assert ours["shots_per_scene"] == 5 and ours["frames_per_shot"] == 2
    assert ours["shots"]["min_shot_frames"] == 7 and "decode_threads" not in ours["shots"]  # runtime-only
    assert ours["vit"]["img_size"] == 32


def test_model_card_front_matter(exported):
    import yaml

    text = (exported / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "timm" and front["license"] == "cc-by-4.0"
    assert "movies2scenes" in front["tags"] and front["datasets"] == ["my-catalogue"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    # issue 42: only evaluations of the encoder (NaN never written); the batch acc1 was listed as a
    # result on "held-out movies"
    assert metrics == [{"name": "place.top-1", "type": "top-1", "value": 0.75}]
    assert "held-out movies" not in text.split("---\n")[1]
    assert "## Evaluation" in text and "**place**: scene encoder top-1 0.750" in text
    assert "## Training figures (not evaluations" in text and '"acc1": 0.21875' in text
    assert "local-dir:PATH" in text and "resolve_model_data_config" in text


def test_edited_timm_config_is_refused(exported, tmp_path):
    import shutil

    from movies2scenes import load_scene_encoder
    from movies2scenes.models.weights import ModelFileError

    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_args"]["depth"] = 3
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="disagree with the vit section"):
        load_scene_encoder(bad)


def test_folders_of_the_older_one_file_format_still_load(tmp_path):
    """Exports written before the timm-native split kept everything in config.json."""
    from safetensors.torch import save_file

    from movies2scenes import load_scene_encoder
    from movies2scenes.models.vit import create_scene_vit, vit_kwargs

    torch.manual_seed(0)
    model = create_scene_vit(TINY)
    old = tmp_path / "old"
    old.mkdir()
    save_file({k: v.contiguous() for k, v in model.vit.state_dict().items()}, str(old / "model.safetensors"))
    (old / "config.json").write_text(json.dumps({
        "architecture": TINY.arch, "timm_kwargs": vit_kwargs(TINY), "vit": TINY.__dict__, "num_features": 48,
        "input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "shots_per_scene": 4, "frames_per_shot": 1}))
    x = torch.randn(1, 4, 1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_scene_encoder(old)(x), model.eval()(x))


def test_a_users_edit_of_the_model_card_is_kept_and_not_called_damaged(exported_run, tmp_path, capsys):
    """Issue 41 (minor): an edited export/README.md was "damaged" to evaluate (exit 2) and silently
    overwritten by `m2s export --force`."""
    import shutil

    from pathlib import Path

    from movies2scenes.cli import main
    from movies2scenes.export import load_export

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run)
    args = ["-c", str(root / "configs" / "cpu-tiny.yaml"),
            *(o for o in exported_run[1] if not o.startswith("run_dir=")), f"run_dir={run}"]
    card = run / "export" / "README.md"
    card.write_text(card.read_text() + "\nOur notes: trained on the 2026 catalogue.\n")
    load_export(run / "export")  # the card is for people: no consumer refuses it
    edited = card.read_bytes()
    for _ in range(2):  # and never overwritten, however often export runs again
        assert main(["export", *args, "--force"]) == 0
        assert card.read_bytes() == edited
        assert "was edited since export wrote it" in capsys.readouterr().err
    assert "movies2scenes" in (run / "export" / "README.generated.md").read_text()
