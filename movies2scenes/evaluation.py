"""Downstream evaluation on frozen embeddings (paper §4): MLP probes and the metrics of its tables.

* ``MLPProbe`` — two hidden layers (the paper's probe), trained per task with AdamW; the epoch is
  chosen on the validation split (the weights of the best validation epoch are kept).
* Metrics: top-1 accuracy, MSE, average precision (binary) and mAP (multi-label, classes with a
  positive), micro/macro F1 (multi-label at threshold 0.5), retrieval precision@k by L2 nearest
  neighbours (a query never retrieves itself).

Average precision comes from scikit-learn (``average_precision_score``), everything else is a few
lines of numpy. Also :func:`embed_clips` (a clip's keyframes through a scene encoder as one scene).
How probes are run, repeated and compared (grouped folds, paired intervals) is ``movies2scenes.eval``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .artefacts import ShotSamples

TaskKind = Literal["classification", "regression", "multilabel"]


# ----------------------------------------------------------------------------------------------
# metrics


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose highest score is the label (first maximum on ties)."""
    return float((np.asarray(scores).argmax(1) == np.asarray(labels)).mean())


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Binary AP (area under precision–recall, step-wise as scikit-learn); NaN without positives."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores, np.float64)))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean of per-class AP over the classes that have at least one positive."""
    labels = np.asarray(labels).astype(bool)
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(labels.shape[1]) if labels[:, c].any()]
    return float(np.mean(aps)) if aps else float("nan")


def f1_scores(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(micro F1, macro F1) of boolean multi-label predictions; macro averages classes with a
    positive label or prediction."""
    pred, labels = np.asarray(pred).astype(bool), np.asarray(labels).astype(bool)
    tp = (pred & labels).sum(0).astype(np.float64)
    fp = (pred & ~labels).sum(0).astype(np.float64)
    fn = (~pred & labels).sum(0).astype(np.float64)
    micro = 2 * tp.sum() / max(1.0, 2 * tp.sum() + fp.sum() + fn.sum())
    active = (tp + fp + fn) > 0
    per_class = 2 * tp[active] / (2 * tp[active] + fp[active] + fn[active])
    return float(micro), float(per_class.mean()) if active.any() else float("nan")


def precision_at_k(embeddings: np.ndarray, labels: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
    """Mean share of each item's k L2-nearest other items that have its label."""
    x = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels)
    d = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    out = {}
    for k in ks:
        k_eff = min(k, len(x) - 1)
        if k_eff < 1:
            out[k] = float("nan")
            continue
        out[k] = float((labels[order[:, :k_eff]] == labels[:, None]).mean())
    return out


# ----------------------------------------------------------------------------------------------
# the probe


@dataclass
class ProbeConfig:
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # two hidden layers
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 100
    batch_size: int = 64
    seed: int = 0


class MLPProbe:
    """An MLP on frozen embeddings for one task; ``fit`` keeps the best validation epoch."""

    def __init__(self, kind: TaskKind, in_dim: int, out_dim: int, cfg: ProbeConfig | None = None):
        self.kind, self.cfg = kind, cfg or ProbeConfig()
        torch.manual_seed(self.cfg.seed)
        layers, width = [], in_dim
        for h in self.cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.cfg.dropout)]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, out_dim))
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.best_epoch = -1
        self.history: list[float] = []

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.cross_entropy(out, y.long())
        if self.kind == "regression":
            return F.mse_loss(out.squeeze(1), y.float())
        return F.binary_cross_entropy_with_logits(out, y.float())

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """The task's validation metric, higher is better (−MSE for regression)."""
        out = self.predict(x)
        if self.kind == "classification":
            return top1(out, y)
        if self.kind == "regression":
            return -mse(out, y)
        return mean_average_precision(out, y)

    def fit(self, x_train, y_train, x_val, y_val) -> "MLPProbe":
        x_train = np.asarray(x_train, np.float32)
        self.mean, self.std = x_train.mean(0), x_train.std(0) + 1e-6
        xt = torch.from_numpy((x_train - self.mean) / self.std)
        yt = torch.as_tensor(np.asarray(y_train))
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        best, best_state = -np.inf, None
        for epoch in range(self.cfg.epochs):
            self.net.train()
            for idx in torch.randperm(len(xt), generator=gen).split(self.cfg.batch_size):
                loss = self._loss(self.net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            val = self.score(x_val, y_val)
            self.history.append(val)
            if val > best:
                best, best_state, self.best_epoch = val, copy.deepcopy(self.net.state_dict()), epoch
        if best_state is not None:
            self.net.load_state_dict(best_state)
        return self

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class scores / regression values / label logits."""
        self.net.eval()
        x = (np.asarray(x, np.float32) - self.mean) / self.std
        out = self.net(torch.from_numpy(x)).numpy()
        return out[:, 0] if self.kind == "regression" else out


@torch.no_grad()
def embed_clips(encoder, shots: "ShotSamples", clips: list[tuple], batch: int) -> np.ndarray:
    """One embedding per clip — (movie, start, end) or (movie, shots in order): the clip's keyframes
    as one scene, in the clip's shot order. Movie by movie, each shot is read and transformed once
    however many clips overlap it; clips of equal length are batched together across movies."""
    from .data import eval_transform, to_chw
    from .features import clip_shots
    from .store import decode_keyframes
    size = encoder.input_size
    tf = eval_transform(size)
    out: dict[tuple, np.ndarray] = {}
    pending: dict[int, list[tuple[tuple, torch.Tensor]]] = {}

    def flush(length: int) -> None:
        items = pending.pop(length, [])
        if items:
            for (c, _), e in zip(items, encoder(torch.stack([x for _, x in items])).float().numpy()):
                out[c] = e

    by_movie: dict[str, list[tuple]] = {}
    for c in dict.fromkeys(clips):
        by_movie.setdefault(c[0], []).append(c)
    for movie, movie_clips in by_movie.items():
        samples, views = shots(movie), {}
        if getattr(encoder, "context", 0):  # a factorised head trained in context: each clip in its movie
            every = [torch.stack([tf(to_chw(f)) for f in decode_keyframes(s)]) for s in samples]
            for c, e in zip(movie_clips, encoder.embed_in_movie(every, [clip_shots(c) for c in movie_clips], batch)):
                out[c] = e
            continue
        for c in movie_clips:
            order = clip_shots(c)
            for t in order:
                if t not in views:
                    views[t] = torch.stack([tf(to_chw(f)) for f in decode_keyframes(samples[t])])
            pending.setdefault(len(order), []).append((c, torch.stack([views[t] for t in order])))
            if len(pending[len(order)]) == batch:
                flush(len(order))
    for length in list(pending):
        flush(length)
    return np.stack([out[c] for c in clips])
