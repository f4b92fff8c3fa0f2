"""A representation against a baseline on the same folds: the mean difference of the task's main
metric, a 95 % interval from a bootstrap, and a paired permutation p that swaps the two
representations' predictions movie by movie (seed × movie where both have several training seeds).
``scipy.stats.bootstrap`` and ``scipy.stats.permutation_test`` do the resampling.

The bootstrap resamples everything the number is an average over, so that its interval holds the
variance of each: **movies** (every clip of a drawn movie, both representations' predictions of it
together: paired), the **draws of the folds** (the same draw indices for both sides: paired when both
were probed on the same folds, and still right when they were not, as in the fold-draw A/A test) and
the **training seeds** (paired by index where both sides have as many; else each side's own). An
interval over movies alone misses the fold draw: issue 39's A/A row — one representation, a second draw
of 3 × 5 folds — came out "worse" by 2.4 ± 1.5 points on genre mAP.

The verdict is read from the interval alone: "better" / "worse" when it excludes 0, else "tie".
Scores are (seeds, repeats, clips, outputs) arrays of out-of-fold predictions
(:func:`.probes.out_of_fold` per training seed). A representation's number: for top-1 and MSE (means
over clips) the mean over its seeds and repeats of each clip's term; for AP and mAP (not means over
clips) the mean over its training seeds of the metric of each clip's score averaged over the draws
(the draws' probes bagged, as many on both sides), so a resample costs one scikit-learn call per seed
instead of one per seed × draw. Seeds are never pooled into an ensemble: three trained models
averaged would beat one baseline by ensembling alone."""

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
    return _seed_mean(task.kind, scores.mean(1), task.y)


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
    units, rng = _Units(task), np.random.default_rng(resampling.seed)
    draw = _Draw(task, units, a, b)
    ci = bootstrap(draw.samples(), draw, vectorized=False, n_resamples=resampling.n_bootstrap,
                   method="percentile", confidence_level=resampling.confidence, random_state=rng).confidence_interval
    va, vb = value(task, a), value(task, b)
    p = _permutation_p(task, units, a, b, resampling, rng, permutation_test)
    low, high = float(ci.low), float(ci.high)
    if not np.isfinite(low) or not np.isfinite(high):  # every resample equal: the difference is that number
        low = high = va - vb
    return Comparison(NAMES[task.kind], higher_is_better(task.kind), va, vb, va - vb, low, high, p, units.n)


class _Draw:
    """One bootstrap resample's difference a − b, given drawn indices of movies, fold draws and seeds
    (``samples()`` lists what is resampled; scipy draws each independently, with replacement)."""

    def __init__(self, task: Task, units: _Units, a: np.ndarray, b: np.ndarray):
        self.task, self.units = task, units
        self.paired_seeds = a.shape[0] == b.shape[0]
        if decomposable(task.kind):  # per-movie sums of per-clip terms, per seed and draw: (seeds, draws, movies)
            self.a, self.b = (np.stack([[np.bincount(units.of_clip, t, units.n) for t in s]
                                        for s in per_clip(task.kind, x, task.y)]) for x in (a, b))
        else:
            self.a, self.b = a, b
        # what is resampled: movies, fold draws, a's seeds and — unless paired by index — b's; an
        # axis of one element is not (scipy needs two)
        whole = {"movies": units.n, "draws": a.shape[1], "seeds_a": a.shape[0],
                 "seeds_b": 1 if self.paired_seeds else b.shape[0]}
        self.axes = {k: n for k, n in whole.items() if n > 1 or k == "movies"}

    def samples(self) -> tuple:
        return tuple(np.arange(n) for n in self.axes.values())

    def __call__(self, *drawn):
        pick = {"draws": slice(None), "seeds_a": slice(None), "seeds_b": slice(None)}
        pick |= {k: np.asarray(v, int) for k, v in zip(self.axes, drawn)}
        if self.paired_seeds:
            pick["seeds_b"] = pick["seeds_a"]
        m, r = pick["movies"], pick["draws"]
        a = self.a[pick["seeds_a"]][:, r].mean(1)  # (seeds, movies) sums, or (seeds, clips, outputs) scores
        b = self.b[pick["seeds_b"]][:, r].mean(1)
        if decomposable(self.task.kind):
            return (a.mean(0)[m].sum() - b.mean(0)[m].sum()) / self.units.count[m].sum()
        rows, y, kind = self.units.clips(m), self.task.y, self.task.kind
        return _seed_mean(kind, a[:, rows], y[rows]) - _seed_mean(kind, b[:, rows], y[rows])


def _seed_mean(kind: str, scores: np.ndarray, y: np.ndarray) -> float:
    """The metric of each seed's draw-averaged scores, averaged over the seeds: a row of several
    training seeds is scored as the mean of its models, never as their ensemble."""
    return float(np.mean([metric(kind, s, y) for s in scores]))


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
    else:  # per seed: its repeats' mean scores, a's or b's by unit; the metric per seed, then their mean
        ra, rb = a.mean(1), b.mean(1)  # (seeds, clips, outputs)

        def stat(xs, zs):
            m = swapped(xs)[:, units.of_clip, None]  # (seeds, clips, 1)
            return _seed_mean(kind, np.where(m, rb, ra), y) - _seed_mean(kind, np.where(m, ra, rb), y)
        vectorized = False
    res = permutation_test((x, z), stat, permutation_type="samples", vectorized=vectorized,
                           n_resamples=resampling.n_permutations, random_state=rng)
    return float(res.pvalue)
