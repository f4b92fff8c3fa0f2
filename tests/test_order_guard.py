"""Issue 40: the drift guard that watches order (``scene_encoder.factorised.keep: order``) — its monitor
reads an order-blind encoder at exactly 0.5 and an order-reading one far above, draws no global
random numbers, reorders only the scene inside a context window, and reads windows at pseudo scene
starts of held-out movies only; the stage keeps the step the rule names and says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from movies2scenes.models.factorised import TemporalResidual, context_window
from movies2scenes.monitor import OrderMonitor

ROOT = Path(__file__).resolve().parents[1]


def _windows(movies: int = 6, per_movie: int = 8, n: int = 5, d: int = 12, seed: int = 0):
    """Windows whose shots move from a wide shot to a close-up (each its own, near one of two shared
    directions), as a scene's set-ups do, so a window and its reversal differ in their first shot;
    labels = the window's movie."""
    g = torch.Generator().manual_seed(seed)
    wide, close = torch.randn(d, generator=g), torch.randn(d, generator=g)
    windows, labels = [], []
    for m in range(movies):
        for _ in range(per_movie):
            a, b = wide + 0.5 * torch.randn(d, generator=g), close + 0.5 * torch.randn(d, generator=g)
            t = torch.linspace(0, 1, n)[:, None]
            windows.append((1 - t) * a + t * b + 0.05 * torch.randn(n, d, generator=g))
            labels.append(m)
    return torch.stack(windows), np.asarray(labels)


class FirstShot(torch.nn.Module):
    """An encoder that reads order: the scene's first shot."""

    def forward(self, x):
        return x[:, 0]


def test_an_order_blind_encoder_reads_exactly_half_an_order_reading_one_far_more():
    views, labels = _windows()
    monitor = OrderMonitor(views, labels, dim=views.shape[-1], seed=0)
    mean = TemporalResidual(views.shape[-1], shots=5).eval()  # untrained: exactly the mean
    state = torch.get_rng_state()
    blind = monitor(mean)
    assert torch.equal(torch.get_rng_state(), state)  # training's random numbers are untouched
    assert blind == 0.5
    assert monitor(FirstShot()) > 0.75  # arrow ~1, shuffled less (the first shot may stay)
    again = OrderMonitor(views, labels, dim=views.shape[-1], seed=0)
    assert all(torch.equal(a, b) for a, b in zip(monitor.others, again.others))  # seeded


def test_in_a_context_window_only_the_scene_is_reordered():
    rows = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    views = torch.from_numpy(np.stack([context_window(rows, range(s, s + 4), 10) for s in (2, 8, 14)]))
    shuffled, backwards = OrderMonitor(views, np.array([0, 1, 2]), dim=6, seed=1).others
    focus = views[..., 7] > 0.5
    for other in (shuffled, backwards):
        assert torch.equal(other[~focus], views[~focus])  # the context and the flags stay where they were
        assert not torch.equal(other[focus], views[focus])
        for i in range(3):  # the scene's shots, in another order
            assert sorted(map(tuple, other[i][focus[i]].tolist())) == sorted(map(tuple, views[i][focus[i]].tolist()))
    assert torch.equal(backwards[0][focus[0]], views[0][focus[0]].flip(0))


def test_pseudo_scene_starts_are_where_neighbouring_shots_differ_most():
    from movies2scenes.monitor import pseudo_scene_starts

    rng = np.random.default_rng(0)
    places = rng.standard_normal((4, 32))
    starts = [0, 7, 16, 22]  # four scenes, each its own place
    rows = np.concatenate([places[i] + 0.1 * rng.standard_normal((b - a, 32))
                           for i, (a, b) in enumerate(zip(starts, starts[1:] + [30]))])
    assert pseudo_scene_starts(rows, 10).tolist() == [7, 16, 22]  # ⌊30 / 10⌋ = 3 boundaries


def test_the_order_monitor_reads_windows_at_pseudo_scene_starts_of_held_out_movies_only():
    from movies2scenes.monitor import ORDER_LENGTH, make_order_monitor, pseudo_scene_starts

    rng = np.random.default_rng(1)

    class Features:  # the ShotFeatures interface the monitor reads
        dim = 8
        movie_ids = [f"m{i}" for i in range(6)]
        rows = {m: rng.standard_normal((20, 8)).astype(np.float32) for m in movie_ids}

        def movie(self, m):
            return self.rows[m]

    features = Features()
    monitor = make_order_monitor(features, {"m0", "m1"}, 16, 5, 0, eval_only={"m5"})
    assert monitor.movies == 3  # the held-out movies m2, m3, m4: not trained on, not evaluation-only
    expected = [features.rows[m][s:s + ORDER_LENGTH] for m in ("m2", "m3", "m4")
                for s in pseudo_scene_starts(features.rows[m], 5) if s + ORDER_LENGTH <= 20]
    assert np.array_equal(monitor.views.numpy(), np.stack(expected))
    assert make_order_monitor(features, set(features.movie_ids), 16, 5, 0, eval_only=set(features.movie_ids[1:])) is None


def test_keep_order_is_checked():
    from movies2scenes.config import ConfigError, load

    base = [ROOT / "configs" / "cpu-tiny.yaml"]
    assert load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.keep=order"]) \
        .scene_encoder.factorised.keep == "order"
    with pytest.raises(ConfigError, match="keep order .*backbone: frozen"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.keep=order",
                    "scene_encoder.factorised.backbone=finetune"])
    with pytest.raises(ConfigError, match="keep"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.keep=best"])


@pytest.mark.slow
def test_stage_keeps_the_best_order_among_steps_that_keep_the_knn_level(mined_run, tmp_path):
    """GRU head, every term: each evaluation records the order accuracy (0.5 at step 0), the saved
    weights are the step the rule names — the highest order accuracy among evaluations whose kNN
    top-1 is at least step 0's, the earlier on ties — and the summary says what was kept."""
    import argparse
    import contextlib
    import io

    from safetensors.torch import load_file

    from movies2scenes.cli import _summary
    from movies2scenes.config import load
    from movies2scenes.stages import train_scene_encoder

    from helpers import scene_encoder_run

    run, ov = scene_encoder_run(
        mined_run, tmp_path / "run", "scene_encoder.arch=factorised", "scene_encoder.train.max_steps=8",
        "scene_encoder.train.knn_every=2", "scene_encoder.train.batch_size=4", "scene_encoder.factorised.head=gru",
        "scene_encoder.factorised.keep=order", "scene_encoder.factorised.msm=1",
        "scene_encoder.factorised.order_negatives=1", "scene_encoder.factorised.boundary=1")
    assert train_scene_encoder.run(load([ROOT / "configs" / "cpu-tiny.yaml"], ov)) == 0
    out = run / "scene_encoder"
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["knn"]["history"]
    assert [h[0] for h in history] == [0, 2, 4, 6, 8] and all(len(h) == 3 for h in history)
    assert history[0][2] == 0.5
    start = history[0][1]
    best = max(h[2] for h in history if h[1] >= start)
    step = next(h[0] for h in history if h[1] >= start and h[2] == best)
    kept = metrics["kept"]
    assert kept["rule"] == "order" and kept["step"] == step and kept["order_accuracy"] == best
    assert kept["start_knn_top1"] == start and kept["last_step"] == 8
    saved = load_file(str(out / "temporal.safetensors"))
    guard = load_file(str(out / "checkpoints" / "best-order.safetensors"))
    assert all(torch.equal(saved[k], guard[k]) for k in saved)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _summary(argparse.Namespace(run_dir=str(run))) == 0
    assert f"factorised: kept step {step} of 8 (best held-out order accuracy {best:.3f}" in printed.getvalue()
    # bench/order_monitor.py (the monitor's positive control) reads the trained head as a quality cell
    import subprocess
    import sys

    (tmp_path / "work" / "cells").mkdir(parents=True)
    (tmp_path / "work" / "cells" / "cell").symlink_to(run)
    r = subprocess.run([sys.executable, "bench/order_monitor.py", "--work", str(tmp_path / "work"), "cell"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"^\| cell \| 0\.\d{3} \(\d+ windows\) \| 0\.\d{3} \(\d+ windows, \d+ movies\) \|$", r.stdout, re.M), r.stdout
