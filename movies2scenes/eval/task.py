"""One evaluation task as arrays: its clips, labels encoded for the probes, and each clip's movie.

A clip is ``(movie_id, shots)``: the shots of the movie, in the order they are embedded (a task CSV's
``start_shot..end_shot`` or its explicit ``shots`` column). The movie is the clip's group: folds,
bootstrap resamples and permutations move whole movies."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Clip = tuple[str, tuple[int, ...]]
KINDS = ("classification", "regression", "multilabel", "binary")


@dataclass
class Task:
    name: str
    kind: str  # one of KINDS
    clips: list[Clip]
    y: np.ndarray  # classification: class index (n,); binary: 0/1 (n,); multilabel: (n, C) bool; regression: (n,)
    classes: list[str] = field(default_factory=list)  # classification / multilabel: the label names

    @property
    def movies(self) -> np.ndarray:
        """Each clip's movie id (the group of every resampling)."""
        return np.array([m for m, _ in self.clips])

    @property
    def strata(self) -> np.ndarray:
        """What the folds balance: the class (classification, binary), else nothing."""
        if self.kind in ("classification", "binary"):
            return np.asarray(self.y, int)
        return np.zeros(len(self.clips), int)

    @classmethod
    def from_rows(cls, name: str, rows: list[dict]) -> "Task":
        """From :func:`movies2scenes.tasks.read_tasks` rows (each with ``movie_id``, ``shots``, ``label``)."""
        kind = rows[0]["kind"]
        clips = [(r["movie_id"], tuple(r["shots"])) for r in rows]
        if kind == "classification":
            classes = sorted({r["label"] for r in rows})
            y = np.array([classes.index(r["label"]) for r in rows])
        elif kind == "binary":
            classes, y = ["0", "1"], np.array([int(r["label"]) for r in rows])
        elif kind == "multilabel":
            classes = sorted({t for r in rows for t in r["label"].split("|") if t})
            y = np.array([[c in r["label"].split("|") for c in classes] for r in rows], bool)
        else:
            classes, y = [], np.array([float(r["label"]) for r in rows], np.float64)
        return cls(name, kind, clips, y, classes)

    def chance(self) -> float:
        """The main metric of a constant prediction: the majority share (classification), the
        positive rate (AP of a constant score: binary), the mean positive rate (multilabel mAP of a
        constant score), the label variance (regression MSE of the mean)."""
        if self.kind == "classification":
            return float(np.bincount(self.y).max() / len(self.y))
        if self.kind == "binary":
            return float(np.mean(self.y))
        if self.kind == "multilabel":
            return float(self.y[:, self.y.any(0)].mean(0).mean())
        return float(np.var(self.y))
