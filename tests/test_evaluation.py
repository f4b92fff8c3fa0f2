"""Probe metrics against hand-computed values, and the MLP probe on data with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from movies2scenes.evaluation import (
    MLPProbe,
    ProbeConfig,
    average_precision,
    f1_scores,
    mean_average_precision,
    mse,
    precision_at_k,
    top1,
)


def test_top1_and_mse():
    assert top1(np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]]), np.array([1, 1, 0])) == pytest.approx(2 / 3)
    assert mse(np.array([1.0, 2.0]), np.array([0.0, 4.0])) == pytest.approx(2.5)


def test_average_precision_by_hand():
    # ranking: pos, neg, pos → precision at the positives 1/1 and 2/3 → AP = (1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    assert np.isnan(average_precision(np.array([0.1, 0.2]), np.array([0, 0])))
    scores = np.array([[0.9, 0.1], [0.8, 0.9], [0.7, 0.2]])
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    assert mean_average_precision(scores, labels) == pytest.approx(5 / 6)  # class 1 has no positive


def test_f1_micro_and_macro():
    pred = np.array([[1, 0], [1, 1], [0, 0]], bool)
    labels = np.array([[1, 0], [0, 1], [0, 1]], bool)
    # class 0: tp 1 fp 1 fn 0 → F1 2/3; class 1: tp 1 fp 0 fn 1 → 2/3; micro: tp 2 fp 1 fn 1 → 2/3
    micro, macro = f1_scores(pred, labels)
    assert micro == pytest.approx(2 / 3) and macro == pytest.approx(2 / 3)


def test_precision_at_k_excludes_the_query():
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    labels = np.array([0, 0, 1, 1])
    p = precision_at_k(x, labels, ks=(1, 2, 10))
    assert p[1] == 1.0 and p[2] == pytest.approx(0.5) and p[10] == pytest.approx(1 / 3)


@pytest.mark.parametrize("kind", ["classification", "multilabel", "regression"])
def test_probe_learns_a_known_rule_and_keeps_the_best_epoch(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    if kind == "classification":
        y, out = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0), 4
    elif kind == "multilabel":
        y, out = np.stack([x[:, 0] > 0, x[:, 1] > 0.5, x[:, 2] < -0.5], 1).astype(np.float32), 3
    else:
        y, out = (x[:, 0] - 2 * x[:, 1]).astype(np.float32), 1
    probe = MLPProbe(kind, 16, out, ProbeConfig(hidden=[64, 32], epochs=30, seed=0))
    probe.fit(x[:400], y[:400], x[400:500], y[400:500])
    assert probe.best_epoch == int(np.argmax(probe.history))
    assert probe.score(x[400:500], y[400:500]) == pytest.approx(max(probe.history))
    test = probe.score(x[500:], y[500:])
    chance = MLPProbe(kind, 16, out, ProbeConfig(hidden=[64, 32], epochs=0)).fit(
        x[:400], y[:400], x[400:500], y[400:500]).score(x[500:], y[500:])
    print(f"{kind}: trained {test:.3f} vs untrained {chance:.3f}")
    assert test > chance + (0.3 if kind != "regression" else 1.0)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_torch_flat_search_equals_faiss(metric):
    """m2s search's GPU path (torch: PyPI's faiss-gpu has no CUDA 13 build) gives faiss-cpu's
    neighbours and scores — run here on the CPU device, on the GPU by bench/gpu_check.py."""
    import torch

    from movies2scenes.retrieval import build_index, flat_search_torch, search

    rng = np.random.default_rng(3)
    db, q = rng.standard_normal((3000, 24)).astype(np.float32), rng.standard_normal((70, 24)).astype(np.float32)
    index = build_index(db, metric)
    d_ref, i_ref = search(index, q, 10, metric, device="cpu")
    qn = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    d, i = flat_search_torch(index.reconstruct_n(0, index.ntotal), qn, 10, metric, torch.device("cpu"))
    assert (i == i_ref).all()
    np.testing.assert_allclose(d, d_ref, rtol=1e-4, atol=1e-4)
