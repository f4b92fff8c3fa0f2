"""A task's main metric on out-of-fold scores: top-1 (classification), AP (binary), mAP
(multi-label), MSE (regression; lower is better) — scikit-learn's, through :mod:`movies2scenes.evaluation`.

Scores are (clips, outputs): class scores, the positive's score, label scores, the prediction.
Top-1 and MSE are means over clips (:func:`per_clip` gives the clip's term, which the bootstrap
resamples without recomputing anything); AP and mAP are not, and are recomputed per resample."""

from __future__ import annotations

import numpy as np

from ..evaluation import average_precision

NAMES = {"classification": "top-1", "binary": "AP", "multilabel": "mAP", "regression": "MSE"}


def higher_is_better(kind: str) -> bool:
    return kind != "regression"


def decomposable(kind: str) -> bool:
    """Whether the metric is a mean of per-clip terms."""
    return kind in ("classification", "regression")


def per_clip(kind: str, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The per-clip terms of a decomposable metric: 1/0 for a correct top-1, the squared error."""
    if kind == "classification":
        return (scores.argmax(-1) == y).astype(np.float64)
    if kind == "regression":
        return (scores[..., 0] - y) ** 2
    raise ValueError(f"{kind}: not a mean over clips")


def metric(kind: str, scores: np.ndarray, y: np.ndarray) -> float:
    """The task's main metric of one set of scores."""
    if decomposable(kind):
        return float(per_clip(kind, scores, y).mean())
    if kind == "binary":
        return average_precision(scores[:, 0], y)
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, bool)
    present = y.any(0)
    if not present.any():
        return float("nan")
    # mAP over the classes with a positive: one scikit-learn call (average_precision_score per column)
    return float(np.mean(average_precision_score(y[:, present], scores[:, present], average=None)))
