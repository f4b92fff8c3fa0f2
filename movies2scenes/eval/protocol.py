"""The probe protocol in one object: the folds, the three probes and the resampling of a comparison.

``Protocol.score(task, x)`` gives a representation's out-of-fold predictions on a task — the
primary linear probe on every fold draw, the cosine kNN (and retrieval P@1 for classifications) on
the same folds, the paper's MLP on the first draw — and ``Protocol.result`` / ``Protocol.versus``
turn them into the report's numbers and verdicts. The folds depend on the task and ``fold_seed``
only, so every representation scored by one protocol is compared clip by clip."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..evaluation import ProbeConfig
from .folds import FoldPlan
from .paired import Comparison, Resampling, compare, spread, value
from .probes import KnnProbe, LinearProbe, MlpProbe, knn_out_of_fold, out_of_fold
from .scoring import NAMES
from .task import Task


@dataclass
class Scores:
    """One representation's out-of-fold predictions on one task (per training seed when stacked)."""
    linear: np.ndarray  # (seeds, repeats, clips, outputs)
    knn: np.ndarray
    mlp: np.ndarray | None = None  # (seeds, 1, clips, outputs)
    p_at_1: np.ndarray | None = None  # (seeds, repeats, clips): classification only

    @classmethod
    def stack(cls, runs: list["Scores"]) -> "Scores":
        """Several training seeds' scores of one representation as one (seeds first)."""
        def cat(name):
            got = [getattr(r, name) for r in runs]
            return None if any(g is None for g in got) else np.concatenate(got)
        return cls(cat("linear"), cat("knn"), cat("mlp"), cat("p_at_1"))

    def save(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def load(cls, arrays) -> "Scores":
        return cls(*(arrays[k] if k in arrays else None for k in ("linear", "knn", "mlp", "p_at_1")))


@dataclass
class Protocol:
    folds: FoldPlan = field(default_factory=FoldPlan)
    linear: LinearProbe = field(default_factory=LinearProbe)
    knn: KnnProbe = field(default_factory=KnnProbe)
    mlp: MlpProbe | None = field(default_factory=MlpProbe)
    resampling: Resampling = field(default_factory=Resampling)

    @classmethod
    def from_config(cls, ev) -> "Protocol":
        """From an ``EvaluateConfig``."""
        mlp = MlpProbe(ProbeConfig(list(ev.hidden), ev.dropout, ev.lr, ev.weight_decay, ev.epochs, ev.batch_size)) \
            if ev.mlp else None
        return cls(FoldPlan(ev.repeats, ev.folds, ev.fold_seed), LinearProbe(tuple(ev.probe_grid)), KnnProbe(ev.knn),
                   mlp, Resampling(ev.bootstrap, ev.permutations))

    def describe(self) -> dict:
        return {"folds": f"{self.folds.repeats} x {self.folds.folds}-fold, grouped by movie (stratified by class)",
                "fold_seed": self.folds.seed,
                "primary": f"standardised features, L2 logistic (one-vs-rest for multi-label) / ridge, C in "
                           f"{list(self.linear.grid)} by {self.linear.inner_folds}-fold inner grouped CV",
                "knn": f"cosine, k = {self.knn.k}", "mlp": "the paper's MLP probe, first fold draw" if self.mlp else "off",
                "interval": f"{self.resampling.confidence:.0%} movie-level paired bootstrap "
                            f"({self.resampling.n_bootstrap} resamples), paired permutation p "
                            f"({self.resampling.n_permutations} movie swaps)"}

    def draw(self, task: Task) -> np.ndarray:
        return self.folds.draw(task)

    def score(self, task: Task, x: np.ndarray, folds: np.ndarray | None = None, secondary: bool = True) -> Scores:
        """Out-of-fold scores of every probe; ``secondary=False``: without the MLP and P@1 (the kNN,
        cheap, is always scored)."""
        folds = self.draw(task) if folds is None else folds
        x = np.asarray(x, np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"task {task.name!r}: the embeddings hold non-finite values")
        mlp = out_of_fold(self.mlp, task, x, folds[:1])[None] if self.mlp is not None and secondary else None
        knn, p1 = knn_out_of_fold(self.knn, task, x, folds)
        return Scores(out_of_fold(self.linear, task, x, folds)[None], knn[None], mlp,
                      p1[None] if p1 is not None and secondary else None)

    def result(self, task: Task, s: Scores) -> dict:
        """The report's numbers for one representation on one task."""
        out = {"metric": NAMES[task.kind], "linear": value(task, s.linear), "linear_fold_sd": spread(task, s.linear),
               "knn": value(task, s.knn)}
        if s.mlp is not None:
            out["mlp"] = value(task, s.mlp)
        if s.p_at_1 is not None:
            out["p_at_1"] = float(s.p_at_1.mean())
        return out

    def versus(self, task: Task, a: Scores, b: Scores) -> Comparison:
        """The primary probe's ``a`` against baseline ``b``."""
        return compare(task, a.linear, b.linear, self.resampling)


def shuffled(task: Task, seed: int = 0) -> Task:
    """The task with each clip's shots in a seeded shuffled order (a clip of n ≥ 2 shots never keeps
    its own order): the shuffle diagnostic's input. Labels and movies are unchanged."""
    clips = []
    for i, (movie, shots) in enumerate(task.clips):
        rng = np.random.default_rng([seed, 61, i])
        order = list(shots)
        if len(order) > 1:
            while order == list(shots):
                order = [shots[j] for j in rng.permutation(len(shots))]
        clips.append((movie, tuple(order)))
    return Task(task.name, task.kind, clips, task.y, task.classes)


def score_task(protocol: Protocol, task: Task, represent: dict, shuffle_diagnostic: bool) -> dict:
    """One task's report entry: every representation (``represent``: name → clips → embeddings;
    the first is the one judged, the others its baselines) probed on the same folds, each baseline
    compared with it, and — for ordinary windows of several shots — the shuffle diagnostic."""
    entry = {"kind": task.kind, "clips": len(task.clips), "movies": int(len(set(task.movies))),
             "metric": None, "chance": task.chance()}
    if task.kind in ("classification", "binary") and len(set(task.y.tolist())) < 2:
        return entry | {"skipped": "every clip has the same label (nothing to tell apart)"}
    if task.kind == "multilabel" and not task.y.any():
        return entry | {"skipped": "no clip has a label"}
    try:
        folds = protocol.draw(task)
    except ValueError as e:
        return entry | {"skipped": str(e)}
    started, scores = time.time(), {}
    for name, embed in represent.items():
        scores[name] = protocol.score(task, embed(task.clips), folds)
        print(f"evaluate: {task.name}: {name} probed ({len(task.clips)} clips, {len(set(task.movies))} movies, "
              f"{time.time() - started:.0f} s)", flush=True)
    (first, mine), *baselines = scores.items()
    result = protocol.result(task, mine)
    entry |= {"metric": result["metric"], first: result,
              "baselines": {b: protocol.result(task, s) for b, s in baselines},
              "vs": {b: protocol.versus(task, mine, s).as_dict() for b, s in baselines}}
    ordinary = all(shots == tuple(range(shots[0], shots[0] + len(shots))) for _, shots in task.clips)
    if shuffle_diagnostic and ordinary and any(len(shots) > 1 for _, shots in task.clips):
        mixed = shuffled(task, protocol.folds.seed)
        entry["shuffled"] = {}
        for name, embed in represent.items():  # the linear probe alone: the gap is read from it
            s = protocol.score(mixed, embed(mixed.clips), folds, secondary=False)
            gap = protocol.versus(task, scores[name], s)
            entry["shuffled"][name] = {"linear": value(task, s.linear), "gap": gap.as_dict()}
        print(f"evaluate: {task.name}: shuffle diagnostic done ({time.time() - started:.0f} s)", flush=True)
    return entry
