"""The factorised scene encoder (issue 26): at step 0 it is exactly the mean of its shot tokens, any
number of shots works, padded shots change nothing, training makes it see what a mean cannot (the
order of shots); the train-scene-encoder stage with ``scene_encoder.arch=factorised`` (kNN drift
guard, export, pixels = features, resume after a kill)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from movies2scenes.models.factorised import FactorisedSceneEncoder, TemporalResidual, resample_shot_positions


@pytest.mark.parametrize("n", [1, 3, 9, 14])
@pytest.mark.parametrize("width", [None, 16])
def test_untrained_encoder_is_exactly_the_mean(n, width):
    torch.manual_seed(0)
    enc = TemporalResidual(48, shots=9, width=width).eval()
    tokens = torch.randn(5, n, 48)
    assert torch.equal(enc(tokens), tokens.mean(1))


def test_shot_positions_resample_to_any_n():
    pos = torch.randn(1, 9, 8)
    assert resample_shot_positions(pos, 9) is pos
    r = resample_shot_positions(pos, 17)
    assert r.shape == (1, 17, 8) and torch.allclose(r[:, 0], pos[:, 0]) and torch.allclose(r[:, -1], pos[:, -1])
    assert torch.allclose(r[:, 2], pos[:, 1])  # 17 positions: every other one is an original position


def test_padded_shots_change_nothing():
    torch.manual_seed(0)
    enc = TemporalResidual(32, shots=6)
    with torch.no_grad():
        enc.out.weight.normal_(0, 0.1)  # a trained-looking residual
    tokens = torch.randn(2, 6, 32)
    padded = torch.cat([tokens, torch.randn(2, 3, 32)], 1)
    mask = torch.tensor([[True] * 6 + [False] * 3] * 2)
    with torch.no_grad():
        assert torch.allclose(enc(padded, mask), enc(tokens), atol=1e-5)


def test_training_learns_the_order_a_mean_cannot_see():
    """Windows of 4 shots of kind A then 4 of kind B (say wide shots, then close-ups), and the
    reverse, have the same mean; after a few hundred steps on CPU the encoder maps them to different
    targets, which at step 0 it cannot (its output is the mean)."""
    torch.manual_seed(0)
    d = 16
    enc = TemporalResidual(d, shots=8, depth=1)
    opt = torch.optim.AdamW(enc.parameters(), lr=3e-3)
    target = {0: torch.randn(d), 1: torch.randn(d)}
    kind_a, kind_b = torch.randn(d), torch.randn(d)

    def batch(size=32):
        a = kind_a + 0.3 * torch.randn(size, 1, d)
        b = kind_b + 0.3 * torch.randn(size, 1, d)
        first = torch.cat([a.expand(-1, 4, -1), b.expand(-1, 4, -1)], 1)
        second = torch.cat([b.expand(-1, 4, -1), a.expand(-1, 4, -1)], 1)
        return first, second

    first, second = batch()
    with torch.no_grad():
        assert torch.allclose(enc(first), enc(second), atol=1e-5)
    for _ in range(300):
        first, second = batch()
        mean = first.mean(1)
        loss = ((enc(first) - mean - target[0]) ** 2).mean() + ((enc(second) - mean - target[1]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, second = batch(64)
    with torch.no_grad():
        gap = (enc(first) - enc(second)).norm(dim=1).mean()
    assert gap > 0.7 * (target[0] - target[1]).norm(), (float(gap), float((target[0] - target[1]).norm()))


def test_pixels_through_a_frozen_backbone_start_at_the_shot_mean():
    import timm

    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    enc = FactorisedSceneEncoder(backbone, TemporalResidual(backbone.num_features, shots=3), 32).eval()
    x = torch.randn(2, 3, 2, 3, 32, 32)  # 2 scenes of 3 shots x 2 frames
    with torch.no_grad():
        per_frame = backbone(x.flatten(0, 2)).reshape(2, 3, 2, -1)
        assert torch.equal(enc(x), per_frame.mean(2).mean(1))
    enc.train()
    enc(x).sum().backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert enc.temporal.out.weight.grad is not None and enc.temporal.out.weight.grad.abs().sum() > 0


def test_embed_windows_takes_clips_of_any_length():
    """embed_windows (how the bench reads a saved residual over stored shot features): one row per
    clip whatever its length; untrained, each row is the clip's mean."""
    from movies2scenes.models.factorised import embed_windows

    torch.manual_seed(0)
    enc = TemporalResidual(12, shots=5).eval()
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(n, 12)).astype(np.float32) for n in (5, 3, 10, 1)]
    e = embed_windows(enc, clips)
    assert e.shape == (4, 12)
    np.testing.assert_allclose(e, np.stack([c.mean(0) for c in clips]), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# the stage (scene_encoder.arch=factorised, frozen backbone)

ROOT = Path(__file__).resolve().parents[1]
FACTORISED = ["scene_encoder.arch=factorised", "scene_encoder.train.max_steps=6", "scene_encoder.train.knn_every=2",
              "scene_encoder.train.checkpoint_every=3", "scene_encoder.train.batch_size=4"]


def _copy(mined_run, dest: Path) -> tuple[Path, list[str]]:
    from helpers import scene_encoder_run

    return scene_encoder_run(mined_run, dest, *FACTORISED)


@pytest.mark.slow
def test_stage_trains_on_shot_features_keeps_the_knn_best_and_exports(mined_run, tmp_path):
    """The stage trains on shot-feature windows (no decoding), keeps the kNN monitor's first best
    evaluation (step 0 = the mean counts), exports backbone + temporal residual, and the exported
    encoder on pixels gives what the kept residual gives on the stored shot features."""
    from helpers import export_matches_features
    from movies2scenes.config import load
    from movies2scenes.features import ShotFeatures
    from movies2scenes.models.factorised import load_temporal
    from movies2scenes.stages import export, train_scene_encoder

    run, ov = _copy(mined_run, tmp_path / "run")
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    assert train_scene_encoder.run(cfg) == 0
    out = run / "scene_encoder"
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["knn"]["history"]
    assert [s for s, _ in history] == [0, 2, 4, 6]
    best = max(t for _, t in history)
    assert metrics["kept"] == {"rule": "knn", "step": next(s for s, t in history if t == best), "knn_top1": best,
                               "last_step": 6}
    settings = json.loads((out / "movies2scenes.json").read_text())
    assert settings["arch"] == "factorised" and settings["temporal"]["shots"] == 3
    # the saved backbone is the shot encoder, unchanged
    assert (out / "model.safetensors").read_bytes() == (run / "shot_encoder" / "model.safetensors").read_bytes()
    assert train_scene_encoder.run(cfg) == 0  # a no-op
    import argparse
    import contextlib
    import io

    from movies2scenes.cli import _summary

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _summary(argparse.Namespace(run_dir=str(run))) == 0
    assert f"factorised: kept step {metrics['kept']['step']} of 6" in printed.getvalue()
    assert export.run(cfg) == 0
    assert "factorised" in (run / "export" / "README.md").read_text()
    clips, from_features = export_matches_features(run, load_temporal(out, settings["temporal"]))
    feats = ShotFeatures(run / "shot_features")
    if metrics["kept"]["step"] == 0:  # kept at the mean: exactly the mean of the shot features
        mean = np.stack([np.asarray(feats.movie(m)[a:b], np.float32).mean(0) for m, a, b in clips])
        np.testing.assert_array_equal(from_features, mean)


@pytest.mark.slow
def test_stage_keep_last_and_resume_after_kill(mined_run, tmp_path):
    """keep=last keeps the last step's weights (they differ from the mean); a run killed at its
    first checkpoint resumes to the same weights as an uninterrupted one — with keep=knn too
    (the kept snapshot survives the kill)."""
    from helpers import kill_when
    from movies2scenes.config import load
    from movies2scenes.stages import train_scene_encoder

    for keep in ("last", "knn"):
        straight, ov = _copy(mined_run, tmp_path / f"a-{keep}")
        killed, ov_k = _copy(mined_run, tmp_path / f"b-{keep}")
        ov, ov_k = [*ov, f"scene_encoder.factorised.keep={keep}"], [*ov_k, f"scene_encoder.factorised.keep={keep}"]
        assert train_scene_encoder.run(load([ROOT / "configs" / "cpu-tiny.yaml"], ov)) == 0
        kill_when(["train-scene-encoder", "-c", "configs/cpu-tiny.yaml", *ov_k], ROOT,
                  killed / "scene_encoder" / "checkpoints" / "checkpoint-00000003")
        assert train_scene_encoder.run(load([ROOT / "configs" / "cpu-tiny.yaml"], ov_k)) == 0
        a = load_file(str(straight / "scene_encoder" / "temporal.safetensors"))
        b = load_file(str(killed / "scene_encoder" / "temporal.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), keep
        kept = json.loads((straight / "scene_encoder" / "metrics.json").read_text())["kept"]
        if keep == "last":
            assert kept == {"rule": "last", "step": 6} and a["out.weight"].abs().sum() > 0


@pytest.mark.slow
def test_stage_finetunes_the_backbone_at_a_lower_rate(mined_run, tmp_path):
    """factorised.backbone=finetune: the shot encoder's backbone trains with the residual on the
    pairs' pixels (its group at backbone_lr × lr); keep=last so the trained weights are saved; the
    export loads and embeds any n."""
    from movies2scenes import load_scene_encoder
    from movies2scenes.config import load
    from movies2scenes.models.factorised import FactorisedSceneEncoder
    from movies2scenes.stages import export, train_scene_encoder

    run, ov = _copy(mined_run, tmp_path / "run")
    ov += ["scene_encoder.factorised.backbone=finetune", "scene_encoder.factorised.backbone_lr=0.5",
           "scene_encoder.factorised.keep=last", "scene_encoder.train.max_steps=3"]
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    assert train_scene_encoder.run(cfg) == 0 and export.run(cfg) == 0
    out = run / "scene_encoder"
    trained, start = load_file(str(out / "model.safetensors")), load_file(str(run / "shot_encoder" / "model.safetensors"))
    assert trained.keys() == start.keys() and any(not torch.equal(trained[k], start[k]) for k in start)
    ckpt = sorted((out / "checkpoints").glob("checkpoint-*"))[-1]
    from movies2scenes.training import read_progress

    sched = read_progress(ckpt)["scheduler"]
    assert len(sched["base_lrs"]) == 2 and sched["base_lrs"][1] == pytest.approx(0.5 * sched["base_lrs"][0])
    encoder = load_scene_encoder(run / "export")
    assert isinstance(encoder, FactorisedSceneEncoder)
    size = encoder.input_size
    assert encoder(torch.randn(2, 5, 1, 3, size, size)).shape == (2, encoder.num_features)


def test_factorised_settings_are_checked(tmp_path):
    from movies2scenes.config import ConfigError, load

    with pytest.raises(ConfigError, match="backbone: expected one of .frozen., .finetune., got .lora."):
        load([ROOT / "configs" / "cpu-tiny.yaml"], ["scene_encoder.arch=factorised", "scene_encoder.factorised.backbone=lora"])
    with pytest.raises(ConfigError, match="scene_encoder.arch: expected one of .joint., .factorised., got .vivit."):
        load([ROOT / "configs" / "cpu-tiny.yaml"], ["scene_encoder.arch=vivit"])
