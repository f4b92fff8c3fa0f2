"""Scene-pair mining (paper §3.3): similar, non-overlapping scene pairs from one similar movie pair.

Inputs are two shot-feature matrices X₁ (M × d) and X₂ (N × d) — in the pipeline E_movie without
its last FC, over *all* shots of each movie. A *scene* is n consecutive shots (default 9); a scene
pair is a pair of start shots (i, j).

**Score.** A = X₁X₂ᵀ (M × N); the score of (i, j) is the mean of the n × n window of A at (i, j),
stride 1. Because the mean of x₁[a]·x₂[b] over a window is (Σₐ x₁[a])·(Σ_b x₂[b]) / n², the whole
score matrix is one matrix product of *window-summed* features (an integral image in feature
space): W₁W₂ᵀ / n², with W₁ = sliding sums of n rows of X₁ ((M−n+1) × d). No M·N loop and no
M × N intermediate beyond the score matrix itself.

**Selection (exact semantics).** Windows are visited in descending score; among equal scores the
smaller start in movie 1, then the smaller start in movie 2, comes first. A window is *chosen* when
its scene overlaps no already chosen scene in movie 1 (|i − i'| ≥ n for every chosen i') and none
in movie 2 (|j − j'| ≥ n). This is the greedy over the full sorted list, computed without sorting
it: every chosen (i, j) blocks a band of 2n−1 starts in each movie, so the still-valid windows are
always (free rows) × (free columns); we keep each row's best valid window and re-compute a row
only when its best column was blocked. It stops as soon as either movie has no free start left.
Finally the first ``ceil(keep_fraction × chosen)`` chosen pairs (the best ones) are kept.

Degenerate inputs — fewer than n shots on a side, empty or non-finite features — mine nothing and
say why (``Mined.reason``); they never raise.

The tests check the fast path exactly, ties included, against the literal, slow definition (loops
+ a full sort: ``testkit.oracles.mine_pair_reference``, outside the package).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Mined:
    """Kept scene pairs of one movie pair, best first."""

    start_a: np.ndarray  # int64 (K,)
    start_b: np.ndarray  # int64 (K,)
    score: np.ndarray  # float32 (K,)
    chosen: int = 0  # non-overlapping pairs before the keep fraction
    reason: str | None = None  # why nothing was mined (degenerate input), else None

    def __len__(self) -> int:
        return len(self.score)


def _empty(reason: str | None) -> Mined:
    z = np.zeros(0, np.int64)
    return Mined(z, z.copy(), np.zeros(0, np.float32), 0, reason)


def check_inputs(x1, x2, n: int) -> str | None:
    """Why (x1, x2) cannot be mined with scenes of n shots, or None."""
    if n < 1:
        raise ValueError(f"shots per scene must be >= 1, got {n}")
    for name, x in (("movie a", x1), ("movie b", x2)):
        if x.ndim != 2:
            return f"{name}: features must be a (shots × dim) matrix, got shape {tuple(x.shape)}"
        if x.shape[0] < n:
            return f"{name}: {x.shape[0]} shot(s) < {n} shots per scene"
        if x.shape[1] == 0:
            return f"{name}: features have dimension 0"
    if x1.shape[1] != x2.shape[1]:
        return f"feature dimensions differ: {x1.shape[1]} vs {x2.shape[1]}"
    for name, x in (("movie a", x1), ("movie b", x2)):
        finite = torch.isfinite(x) if isinstance(x, torch.Tensor) else np.isfinite(x)
        if not bool(finite.all()):
            rows = (~finite).any(1).nonzero()
            first = int(rows[0][0] if isinstance(x, np.ndarray) else rows[0, 0])
            return f"{name}: non-finite features (first at shot {first})"
    return None


def window_sums(x: torch.Tensor, n: int) -> torch.Tensor:
    """(M, d) → (M − n + 1, d): row i is x[i] + … + x[i + n − 1]."""
    return x.unfold(0, n, 1).sum(-1)


def window_scores(x1: torch.Tensor, x2: torch.Tensor, n: int) -> torch.Tensor:
    """(M − n + 1, N − n + 1): mean of every n × n window of x1 @ x2ᵀ, stride 1."""
    return (window_sums(x1, n) @ window_sums(x2, n).T) / float(n * n)


def select_nonoverlapping(scores, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy non-overlapping selection on a (R × C) window-score matrix (semantics in the module
    docstring). Returns (rows, cols, scores) of the chosen windows in the order chosen.

    CUDA tensors are selected on the GPU (torch); anything else with numpy, whose per-pick overhead
    on small vectors is a few microseconds instead of torch's tens. Both are tested against the
    reference."""
    if isinstance(scores, torch.Tensor) and scores.device.type != "cpu":
        return _select_torch(scores, n)
    s = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    return _select_numpy(s, n)


def _select_numpy(scores: np.ndarray, n: int):
    r = scores.shape[0]
    free_col = np.ones(scores.shape[1], dtype=bool)
    best_col = scores.argmax(axis=1)  # first maximum of each row
    best = scores[np.arange(r), best_col].astype(np.float64)
    rows, cols, vals = [], [], []
    while True:
        i = int(best.argmax())  # first row holding the global maximum
        v = best[i]
        if v == -np.inf:
            break  # no free row left: movie a is full
        j = int(best_col[i])
        rows.append(i)
        cols.append(j)
        vals.append(float(scores[i, j]))
        best[max(0, i - n + 1):i + n] = -np.inf  # those rows are never valid again
        free_col[max(0, j - n + 1):j + n] = False
        if not free_col.any():
            break  # movie b is full
        # still-free rows whose best column was just blocked: recompute over the free columns
        stale = np.flatnonzero((best_col > j - n) & (best_col < j + n) & (best != -np.inf))
        if stale.size:
            sub = np.where(free_col, scores[stale], -np.inf)
            best_col[stale] = sub.argmax(axis=1)
            best[stale] = sub[np.arange(stale.size), best_col[stale]]
    return np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(vals, np.float32)


def _select_torch(scores: torch.Tensor, n: int):
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    free_col = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
    best_col = torch.argmax(scores, dim=1)  # first maximum of each row
    best = scores.gather(1, best_col[:, None]).squeeze(1).clone()
    rows, cols, vals = [], [], []
    while True:
        i = int(torch.argmax(best))  # first row holding the global maximum
        v = best[i]
        if bool(v == neg_inf):
            break
        j = int(best_col[i])
        rows.append(i)
        cols.append(j)
        vals.append(float(v))
        best[max(0, i - n + 1):i + n] = neg_inf
        free_col[max(0, j - n + 1):j + n] = False
        if not bool(free_col.any()):
            break
        stale = ((best_col > j - n) & (best_col < j + n) & (best != neg_inf)).nonzero().squeeze(1)
        if len(stale):
            sub = scores[stale].masked_fill(~free_col, neg_inf)
            best_col[stale] = torch.argmax(sub, dim=1)
            best[stale] = sub.gather(1, best_col[stale][:, None]).squeeze(1)
    return (np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(vals, np.float32))


def keep_count(chosen: int, keep_fraction: float) -> int:
    """How many of the chosen pairs are kept: ceil(keep_fraction × chosen)."""
    return min(chosen, math.ceil(keep_fraction * chosen - 1e-9))


def mine_pair(x1, x2, n: int = 9, keep_fraction: float = 0.5, device: str | torch.device | None = None) -> Mined:
    """Mine one movie pair: window scores + greedy non-overlapping selection + keep the top share.

    ``x1``/``x2``: (M × d) / (N × d) numpy arrays or tensors. Runs on ``device`` (default: the
    tensors' device; CUDA when given CUDA tensors). Scores are computed in float32."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    reason = check_inputs(x1, x2, n)
    if reason:
        return _empty(reason)
    t1, t2 = (torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x) for x in (x1, x2))
    dev = torch.device(device) if device is not None else t1.device
    t1, t2 = t1.to(dev, torch.float32), t2.to(dev, torch.float32)
    scores = window_scores(t1, t2, n)
    rows, cols, vals = select_nonoverlapping(scores, n)
    k = keep_count(len(rows), keep_fraction)
    return Mined(rows[:k], cols[:k], vals[:k], len(rows), None)
