"""Issue 40 item 2d: a scene read in its movie's context (``scene_encoder.factorised.context``) —
the window around it, what the head may see and pool, the terms on such windows, and the stage:
it trains, exports, and `m2s embed` reads a scene in context or, with --alone, alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from movies2scenes.models.factorised import (FLAGS, clip_windows, context_span, context_window, embed_windows,
                                             temporal_head)
from movies2scenes.models.pretext import PretextMoCo, PretextTerms

ROOT = Path(__file__).resolve().parents[1]
HEADS = ["transformer", "gru"]


def test_the_context_window_centres_the_scene_where_the_movie_allows_and_keeps_the_clip_order():
    rows = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    assert context_span(20, 8, 11, 9) == (5, 14)  # centred
    assert context_span(20, 0, 3, 9) == (0, 9)  # the movie's start: shifted, not padded
    assert context_span(20, 18, 20, 9) == (11, 20)
    assert context_span(5, 1, 3, 9) == (0, 5)  # a movie shorter than the context: all of it
    w = context_window(rows, (12, 11, 10, 9), 8, pad_to=10)
    assert w.shape == (10, 3 + FLAGS)
    real, focus = w[:, 3], w[:, 4]
    assert real.tolist() == [1] * 8 + [0, 0] and focus.tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(w[:8, :3], rows[[7, 8, 12, 11, 10, 9, 13, 14]])  # the span in the clip's order
    assert not w[8:].any()  # padding: zeros, flagged not real


def _head(head: str, trained: bool = False):
    torch.manual_seed(0)
    enc = temporal_head(head, 12, 3, 1, 4, 2.0, 8, context=8).eval()
    if trained:  # a trained-looking head: nothing depends on the zero start
        with torch.no_grad():
            enc.out.weight.normal_()
    return enc


@pytest.mark.parametrize("head", HEADS)
def test_step_0_in_context_is_the_scene_mean_and_padding_changes_nothing(head):
    enc = _head(head)
    rows = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    for shots in [(9, 10, 11), (0, 1, 2), (19, 18, 17)]:
        e = embed_windows(enc, [context_window(rows, shots, 8)])[0]
        np.testing.assert_allclose(e, rows[list(shots)].mean(0), atol=1e-6)
    trained = _head(head, trained=True)
    plain = context_window(rows[:6], (2, 3, 4), 8)
    padded = context_window(rows[:6], (2, 3, 4), 8, pad_to=8)
    padded[6:, :12] = 99.0  # what padding holds is never read
    np.testing.assert_allclose(embed_windows(trained, [plain]), embed_windows(trained, [padded]), atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_a_trained_head_reads_the_shots_around_the_scene(head):
    """In context, a shot outside the scene changes the scene's embedding (through the residual);
    the scene's own mean is what the pooled shots are."""
    enc = _head(head, trained=True)
    rows = np.random.default_rng(1).normal(size=(20, 12)).astype(np.float32)
    a = embed_windows(enc, [context_window(rows, (9, 10, 11), 8)])
    other = rows.copy()
    other[7] += 3.0  # in the context window, not in the scene
    b = embed_windows(enc, [context_window(other, (9, 10, 11), 8)])
    assert not np.allclose(a, b, atol=1e-4)
    far = rows.copy()
    far[0] += 3.0  # outside the context window
    np.testing.assert_array_equal(a, embed_windows(enc, [context_window(far, (9, 10, 11), 8)]))
    alone = embed_windows(enc, clip_windows(lambda m: rows, [("m", 9, 12)], 0))
    assert not np.allclose(a, alone, atol=1e-4)  # alone is another reading of the same scene


def test_terms_on_context_windows_touch_the_scene_and_the_real_shots_only():
    torch.manual_seed(0)
    enc = temporal_head("transformer", 12, 3, 1, 4, 2.0, 8, context=8)
    terms = PretextTerms(enc.width, 12, msm=1.0, order_negatives=1.0, boundary=1.0)
    rows = np.random.default_rng(2).normal(size=(5, 20, 12)).astype(np.float32)
    starts = [0, 4, 9, 15, 17]
    short = np.random.default_rng(3).normal(size=(6, 12)).astype(np.float32)
    x = torch.from_numpy(np.stack([context_window(r, range(s, s + 3), 8, 8) for r, s in zip(rows, starts)]
                                  + [context_window(short, (2, 3, 4), 8, 8)]))
    shuffled, reversed_ = PretextTerms.reorderings(x, 12)
    focus = x[..., 13] > 0.5
    for other in (shuffled, reversed_):
        assert torch.equal(other[~focus], x[~focus])  # the context stays where it is
        assert not torch.equal(other, x)
        for i in range(len(x)):  # the scene's shots, permuted among themselves
            got = sorted(map(tuple, other[i][focus[i]].tolist()))
            assert got == sorted(map(tuple, x[i][focus[i]].tolist()))
    assert torch.equal(reversed_[focus].view(6, 3, -1), x[focus].view(6, 3, -1).flip(1))
    real = x[..., 12] > 0.5
    hide = terms.hidden(*real.shape, real.device, real)
    assert not hide[~real].any()  # padding is never a hidden shot
    assert (hide.sum(1) == torch.clamp((0.4 * real.sum(1)).round().long(), min=1)).all()
    model = PretextMoCo(enc, terms, 8, 16, 32, 0.9, 0.2, seed=0)
    loss, stats = model({"query": x, "key": x.flip(0)})
    assert torch.isfinite(loss) and {"msm_loss", "order_loss", "boundary_loss"} <= stats.keys()
    loss.backward()
    assert enc.out.weight.grad is not None and enc.out.weight.grad.abs().sum() > 0


def test_context_settings_are_checked():
    from movies2scenes.config import ConfigError, load

    base = [ROOT / "configs" / "cpu-tiny.yaml"]
    with pytest.raises(ConfigError, match="scene_encoder.factorised.context must be 0"):
        load(base, ["scene_encoder.arch=factorised", "scene_pairs.shots_per_scene=9", "scene_encoder.factorised.context=4"])
    with pytest.raises(ConfigError, match="scene_encoder.factorised.context must be 0"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.context=300"])
    with pytest.raises(ConfigError, match="factorised.backbone: frozen"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.backbone=finetune",
                    "scene_encoder.factorised.context=16"])
    assert load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.context=16"]).scene_encoder.factorised.context == 16


@pytest.mark.slow
def test_stage_in_context_trains_exports_and_embeds_in_context_or_alone(mined_run, tmp_path):
    """Every term on, a 6-shot context around 3-shot scenes: the head is saved with its context, the
    export loads and equals the trained head on the stored features read in context, the card says
    so, and `m2s embed` reads each scene in its movie (or alone with --alone: another embedding)."""
    from helpers import export_matches_features
    from movies2scenes.config import load
    from movies2scenes.models.factorised import load_temporal
    from movies2scenes.stages import export, train_scene_encoder

    from helpers import scene_encoder_run

    run, ov = scene_encoder_run(
        mined_run, tmp_path / "run", "scene_encoder.arch=factorised", "scene_encoder.train.max_steps=6",
        "scene_encoder.train.knn_every=2", "scene_encoder.train.checkpoint_every=3", "scene_encoder.train.batch_size=4",
        "scene_encoder.factorised.keep=last", "scene_encoder.factorised.msm=1", "scene_encoder.factorised.order_negatives=1",
        "scene_encoder.factorised.boundary=1", "scene_encoder.factorised.context=6")
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    assert train_scene_encoder.run(cfg) == 0
    settings = json.loads((run / "scene_encoder" / "movies2scenes.json").read_text())
    assert settings["temporal"]["context"] == 6 and settings["temporal"]["shots"] == 6
    temporal = load_temporal(run / "scene_encoder", settings["temporal"])
    assert temporal.context == 6 and temporal.out.weight.abs().sum() > 0
    assert export.run(cfg) == 0
    assert "6 of its movie's shots" in (run / "export" / "README.md").read_text()
    export_matches_features(run, temporal)
    import csv

    with open(cfg.catalogue, newline="") as f:
        video = Path(next(csv.DictReader(f))["video"])
    video = video if video.is_absolute() else Path(cfg.catalogue).parent / video
    outs = {}
    for name, extra in (("context", []), ("alone", ["--alone"])):
        out = tmp_path / f"{name}.parquet"
        r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", "embed", str(video), "--encoder",
                            str(run / "export"), "--out", str(out), *extra], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs[name] = np.stack(pq.read_table(out).column("embedding").to_pylist())
        assert ("6-shot context" in r.stdout) == (name == "context")
    assert outs["context"].shape == outs["alone"].shape and len(outs["context"]) > 1
    assert not np.allclose(outs["context"], outs["alone"], atol=1e-4)
