"""Probes on frozen embeddings, as out-of-fold predictions over a :class:`~.folds.FoldPlan`'s folds.

* :class:`LinearProbe` — the primary probe: standardised features, L2 logistic regression
  (one-vs-rest for multi-label) or ridge (regression), its C chosen by inner grouped CV on the
  training folds only (ties go to the stronger regularisation). Deterministic: one number per fold.
* :class:`KnnProbe` — cosine k nearest training clips, no training: the neighbours' label share as
  the score, and retrieval precision@k (a neighbour with the query's label) for classifications.
* :class:`MlpProbe` — the paper's probe (two hidden layers, ``evaluation.MLPProbe``), its epoch
  chosen on one inner grouped split of the training folds; kept beside the others, labelled.

:func:`out_of_fold` runs a probe over every fold of every repeat: each clip is predicted once per
repeat, by a probe that never saw its movie."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from ..evaluation import ProbeConfig
from .folds import inner_splits
from .scoring import higher_is_better, metric
from .task import Task


def outputs(task: Task) -> int:
    return len(task.classes) if task.kind in ("classification", "multilabel") else 1


@dataclass(frozen=True)
class LinearProbe:
    name = "linear"
    grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # C (logistic) or 1 / alpha (ridge)
    inner_folds: int = 3
    max_iter: int = 500

    def head(self, kind: str, c: float):
        """The estimator on standardised features: ridge, one-vs-rest logistic or logistic."""
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.multiclass import OneVsRestClassifier

        if kind == "regression":
            return Ridge(alpha=1.0 / c)
        if kind == "multilabel":
            return OneVsRestClassifier(LogisticRegression(C=c, max_iter=self.max_iter))
        return LogisticRegression(C=c, max_iter=self.max_iter)

    def _predict(self, task: Task, est, x: np.ndarray) -> np.ndarray:
        if task.kind == "regression":
            return est.predict(x)[:, None]
        proba = est.predict_proba(x)
        if task.kind == "multilabel":
            return proba
        out = np.zeros((len(x), outputs(task) if task.kind == "classification" else 2))
        out[:, est.classes_] = proba  # a class missing from the training folds scores 0
        return out if task.kind == "classification" else out[:, 1:]

    def choose(self, task: Task, x: np.ndarray, y: np.ndarray, movies: np.ndarray, strata: np.ndarray) -> float:
        """The grid value with the best mean inner-CV metric (the first, most regularised, on ties).
        The inner folds' features are standardised once per split, and the grid is walked from the
        strongest regularisation up with each fit starting where the previous ended (warm start:
        the same optimum, fewer iterations)."""
        from sklearn.preprocessing import StandardScaler

        splits = inner_splits(movies, strata, self.inner_folds)
        if not splits:
            return self.grid[len(self.grid) // 2]
        grid = sorted(self.grid)
        got = np.full((len(grid), len(splits)), np.nan)
        for j, (tr, va) in enumerate(splits):
            scaler = StandardScaler().fit(x[tr])
            xt, xv = scaler.transform(x[tr]), scaler.transform(x[va])
            head = None
            for i, c in enumerate(grid):
                head = self._fit_head(task, c, xt, y[tr], head)
                got[i, j] = metric(task.kind, self._predict(task, head, xv), y[va])
        sign = 1.0 if higher_is_better(task.kind) else -1.0
        with np.errstate(all="ignore"):
            mean = np.array([sign * np.nanmean(row) if np.isfinite(row).any() else -np.inf for row in got])
        return grid[int(np.argmax(mean))]  # the first maximum: the strongest regularisation among equals

    def _fit_head(self, task: Task, c: float, x: np.ndarray, y: np.ndarray, previous=None):
        """The head on standardised features, warm-started from ``previous`` where it can be (sklearn's
        warnings about a label constant in these folds, or an unconverged path point, are silenced)."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        if task.kind in ("classification", "binary") and len(np.unique(y)) < 2:
            return _Constant(y)
        head = self.head(task.kind, c)
        if previous is not None and task.kind in ("classification", "binary") and hasattr(previous, "coef_"):
            head.set_params(warm_start=True)
            head.coef_, head.intercept_ = previous.coef_.copy(), previous.intercept_.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            return head.fit(x, y)

    def fit_predict(self, task: Task, x: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if task.kind == "multilabel" and len(task.classes) == 1:  # one label: a binary task
            task = Task(task.name, "binary", task.clips, task.y[:, 0].astype(int), ["0", "1"])
        from sklearn.preprocessing import StandardScaler

        y, movies, strata = task.y[train], task.movies[train], task.strata[train]
        c = self.choose(task, x[train], y, movies, strata)
        scaler = StandardScaler().fit(x[train])
        return self._predict(task, self._fit_head(task, c, scaler.transform(x[train]), y), scaler.transform(x[test]))


class _Constant:
    """A classifier for training folds that hold one class: it predicts that class."""

    def __init__(self, y: np.ndarray):
        self.classes_ = np.unique(y)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.ones((len(x), 1))


@dataclass(frozen=True)
class KnnProbe:
    name = "knn"
    k: int = 10

    def neighbours(self, x: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=min(self.k, len(train)), metric="cosine", algorithm="brute")
        return train[nn.fit(x[train]).kneighbors(x[test], return_distance=False)]

    def fit_predict(self, task: Task, x: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return self.vote(task, self.neighbours(x, train, test))

    def vote(self, task: Task, nbr: np.ndarray) -> np.ndarray:
        """The neighbours' label share: class shares, label shares, or the mean (regression)."""
        if task.kind == "classification":
            return np.eye(outputs(task))[task.y[nbr]].mean(1)
        if task.kind == "multilabel":
            return task.y[nbr].astype(np.float64).mean(1)
        return task.y[nbr].astype(np.float64).mean(1)[:, None]


@dataclass(frozen=True)
class MlpProbe:
    """The paper's probe (``evaluation.MLPProbe`` with ``config``); the epoch is chosen on one inner
    grouped split of the training folds."""
    name = "mlp"
    config: ProbeConfig = field(default_factory=ProbeConfig)

    def fit_predict(self, task: Task, x: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        import torch

        from ..evaluation import MLPProbe

        splits = inner_splits(task.movies[train], task.strata[train], 5)
        tr, va = (train[splits[0][0]], train[splits[0][1]]) if splits else (train, train)
        kind = {"binary": "multilabel"}.get(task.kind, task.kind)
        y = task.y.astype(np.float32)[:, None] if task.kind == "binary" else task.y
        if task.kind == "multilabel":
            y = y.astype(np.float32)
        torch.manual_seed(self.config.seed)
        probe = MLPProbe(kind, x.shape[1], outputs(task), self.config)
        probe.fit(x[tr], y[tr], x[va], y[va])
        out = probe.predict(x[test])
        return out[:, None] if out.ndim == 1 else out


@contextlib.contextmanager
def one_thread():
    """BLAS and torch on one thread while probes fit: their matrices are small, and threads that
    contend with other processes for the cores cost far more than they give (an MLP probe fit took
    20 epochs in 24 s on 2 torch threads beside another busy process, 0.8 s on one)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def out_of_fold(probe, task: Task, x: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """(repeats, clips, outputs) scores: in each repeat, every clip scored by the probe trained on
    the other folds."""
    x = np.asarray(x, np.float64)
    if len(x) != len(task.clips):
        raise ValueError(f"task {task.name!r}: {len(x)} embeddings for {len(task.clips)} clips")
    out = np.zeros((len(folds), len(task.clips), outputs(task)))
    with one_thread():
        for r, ids in enumerate(folds):
            for f in np.unique(ids):
                test, train = np.flatnonzero(ids == f), np.flatnonzero(ids != f)
                out[r, test] = probe.fit_predict(task, x, train, test)
    return out


def knn_out_of_fold(probe: KnnProbe, task: Task, x: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The kNN probe's out-of-fold scores (as :func:`out_of_fold`) and, for a classification, each
    clip's retrieval P@1 under the same folds (its nearest clip of the *other* folds — other movies —
    shares its label), both from one neighbour search per fold."""
    x = np.asarray(x, np.float64)
    scores = np.zeros((len(folds), len(task.clips), outputs(task)))
    p1 = np.zeros(folds.shape) if task.kind == "classification" else None
    with one_thread():
        for r, ids in enumerate(folds):
            for f in np.unique(ids):
                test, train = np.flatnonzero(ids == f), np.flatnonzero(ids != f)
                nbr = probe.neighbours(x, train, test)
                scores[r, test] = probe.vote(task, nbr)
                if p1 is not None:
                    p1[r, test] = task.y[nbr[:, 0]] == task.y[test]
    return scores, p1
