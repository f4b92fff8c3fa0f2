"""A representation against a baseline on the same folds: the mean difference of the task's main
metric, a 95 % interval from a bootstrap that resamples **movies** (every clip of a drawn movie, both
representations' predictions of it together: a paired bootstrap), and a paired permutation p that
swaps the two representations' predictions movie by movie (seed × movie where both have several
training seeds). ``scipy.stats.bootstrap`` and ``scipy.stats.permutation_test`` do the resampling.

The verdict is read from the interval alone: "better" / "worse" when it excludes 0, else "tie".
Scores are (seeds, repeats, clips, outputs) arrays of out-of-fold predictions
(:func:`.probes.out_of_fold` per training seed). A representation's number: for top-1 and MSE (means
over clips) the mean over its seeds and repeats — each clip's term averaged, so a resample is a few
sums; for AP and mAP (not means over clips) the metric of each clip's score averaged over the seeds
and repeats (an out-of-fold ensemble of the probes), so a resample costs one scikit-learn call per
representation instead of one per seed × repeat."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .scoring import NAMES, decomposable, higher_is_better, metric, per_clip
from .task import Task


@dataclass(frozen=True)
class Resampling:
    n_bootstrap: int = 1000
    n_permutations: int = 1000
    confidence: float = 0.95
    seed: int = 0


def value(task: Task, scores: np.ndarray) -> float:
    """The representation's number on every clip (see the module's docstring)."""
    scores = _four(scores)
    if decomposable(task.kind):
        return float(per_clip(task.kind, scores, task.y).mean())
    return metric(task.kind, scores.mean((0, 1)), task.y)


def spread(task: Task, scores: np.ndarray) -> float:
    """The standard deviation of the metric over the fold draws (repeats) and seeds: how far one
    draw of folds lands from another."""
    scores = _four(scores)
    return float(np.std([metric(task.kind, s, task.y) for s in scores.reshape(-1, *scores.shape[2:])]))


def _four(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    return scores[None] if scores.ndim == 3 else scores


@dataclass
class Comparison:
    metric: str  # top-1, AP, mAP, MSE
    higher_is_better: bool
    a: float  # the representation
    b: float  # the baseline
    diff: float  # a − b
    low: float  # the interval of a − b
    high: float
    p: float  # paired permutation p (two-sided)
    movies: int

    @property
    def verdict(self) -> str:
        if self.low > 0 or self.high < 0:
            return "better" if (self.low > 0) == self.higher_is_better else "worse"
        return "tie"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict, "half_width": self.half_width}


class _Units:
    """The clips of each movie, for resampling movies."""

    def __init__(self, task: Task):
        ids, self.of_clip = np.unique(task.movies, return_inverse=True)
        self.n = len(ids)
        order = np.argsort(self.of_clip, kind="stable")
        self.rows = np.split(order, np.cumsum(np.bincount(self.of_clip, minlength=self.n))[:-1])
        self.count = np.bincount(self.of_clip, minlength=self.n).astype(np.float64)

    def clips(self, movies: np.ndarray) -> np.ndarray:
        return np.concatenate([self.rows[m] for m in np.asarray(movies, int)])


def compare(task: Task, a: np.ndarray, b: np.ndarray, resampling: Resampling = Resampling()) -> Comparison:
    """Representation ``a`` against baseline ``b`` (out-of-fold scores of the same task and folds)."""
    from scipy.stats import bootstrap, permutation_test

    a, b = _four(a), _four(b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"task {task.name!r}: scores of shapes {a.shape} and {b.shape} were not made on the same folds")
    units, kind, y = _Units(task), task.kind, task.y
    rng = np.random.default_rng(resampling.seed)
    movies = np.arange(units.n)
    if decomposable(kind):  # per-movie sums of per-clip terms: every resample is a few sums
        ta = per_clip(kind, a, y).mean((0, 1))
        tb = per_clip(kind, b, y).mean((0, 1))
        sa, sb = np.bincount(units.of_clip, ta, units.n), np.bincount(units.of_clip, tb, units.n)

        def boot(m, axis=-1):
            m = np.asarray(m, int)
            return (sa[m].sum(axis) - sb[m].sum(axis)) / units.count[m].sum(axis)
    else:  # the metric of the seed-and-repeat-averaged scores of the drawn movies' clips
        ma, mb = a.mean((0, 1)), b.mean((0, 1))

        def boot(m):
            rows = units.clips(m)
            return metric(kind, ma[rows], y[rows]) - metric(kind, mb[rows], y[rows])
    ci = bootstrap((movies,), boot, vectorized=decomposable(kind), n_resamples=resampling.n_bootstrap,
                   method="percentile", confidence_level=resampling.confidence, random_state=rng).confidence_interval
    va, vb = value(task, a), value(task, b)
    p = _permutation_p(task, units, a, b, resampling, rng, permutation_test)
    low, high = float(ci.low), float(ci.high)
    if not np.isfinite(low) or not np.isfinite(high):  # every resample equal: the difference is that number
        low = high = va - vb
    return Comparison(NAMES[kind], higher_is_better(kind), va, vb, va - vb, low, high, p, units.n)


def _permutation_p(task, units: _Units, a, b, resampling: Resampling, rng, permutation_test) -> float:
    """Swap a's and b's predictions of whole movies — of seed × movie when both have one score set
    per training seed — and return the two-sided p of the observed difference."""
    kind, y = task.kind, task.y
    by_seed = a.shape[0] == b.shape[0] and a.shape[0] > 1
    if a.shape[0] != b.shape[0]:  # several seeds against one score set: each seed faces that one
        if min(a.shape[0], b.shape[0]) != 1:
            raise ValueError(f"task {task.name!r}: {a.shape[0]} and {b.shape[0]} seeds cannot be paired")
        n = max(a.shape[0], b.shape[0])
        a, b = np.repeat(a, n // a.shape[0], 0), np.repeat(b, n // b.shape[0], 0)
    seeds, groups = a.shape[0], (a.shape[0] if by_seed else 1)
    n_units = groups * units.n
    x, z = np.arange(n_units), np.arange(n_units) + n_units

    def swapped(xs) -> np.ndarray:  # (..., seeds, movies): where a's and b's predictions trade places
        sw = (np.asarray(xs) >= n_units).reshape(*np.shape(xs)[:-1], groups, units.n)
        return np.broadcast_to(sw, (*sw.shape[:-2], seeds, units.n))

    if decomposable(kind):
        d = np.stack([np.bincount(units.of_clip, t, units.n)
                      for t in (per_clip(kind, a, y) - per_clip(kind, b, y)).mean(1)])  # (seeds, movies)
        total = seeds * units.count.sum()

        def stat(xs, zs, axis=-1):
            return np.where(swapped(xs), -d, d).sum((-2, -1)) / total
        vectorized = True
    else:  # per seed: its repeats' mean scores, a's or b's by unit; then the seeds' mean
        ra, rb = a.mean(1), b.mean(1)  # (seeds, clips, outputs)

        def stat(xs, zs):
            m = swapped(xs)[:, units.of_clip, None]  # (seeds, clips, 1)
            return (metric(kind, np.where(m, rb, ra).mean(0), y) - metric(kind, np.where(m, ra, rb).mean(0), y))
        vectorized = False
    res = permutation_test((x, z), stat, permutation_type="samples", vectorized=vectorized,
                           n_resamples=resampling.n_permutations, random_state=rng)
    return float(res.pvalue)
