"""Repeated cross-validation grouped by movie: a movie is never on both sides of a fold.

The folds depend only on the task's clips, labels and the seed — never on a representation — so
every representation compared is probed on exactly the same splits, and a difference between two of
them is paired clip by clip. scikit-learn's ``StratifiedGroupKFold`` draws them (stratified by class
where the task is a classification; plain grouped otherwise)."""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from .task import Task


@dataclass(frozen=True)
class FoldPlan:
    repeats: int = 10
    folds: int = 5
    seed: int = 0

    def draw(self, task: Task) -> np.ndarray:
        """(repeats, clips) fold ids: repeat r's folds from seed (seed, task name, r). A task with
        fewer movies than folds gets as many folds as it has movies (at least 2)."""
        from sklearn.model_selection import StratifiedGroupKFold

        movies = task.movies
        groups = np.unique(movies, return_inverse=True)[1]
        k = min(self.folds, len(np.unique(groups)))
        if k < 2:
            raise ValueError(f"task {task.name!r}: clips of {k} movie(s); grouped cross-validation needs 2 or more")
        out = np.empty((self.repeats, len(movies)), int)
        salt = zlib.crc32(task.name.encode())
        for r in range(self.repeats):
            seed = int(np.random.SeedSequence([self.seed, salt, r]).generate_state(1)[0] % (2 ** 31))
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            with warnings.catch_warnings():  # "the least populated class has only m members": expected, harmless
                warnings.simplefilter("ignore", UserWarning)
                for f, (_, test) in enumerate(splitter.split(np.zeros(len(movies)), task.strata, groups)):
                    out[r, test] = f
        return out


def inner_splits(movies: np.ndarray, strata: np.ndarray, folds: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped (stratified) splits of a training set, for choosing a probe's regularisation on the
    training folds only; fewer when it has fewer movies."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.unique(movies, return_inverse=True)[1]
    k = min(folds, len(np.unique(groups)))
    if k < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedGroupKFold(n_splits=k, shuffle=False).split(np.zeros(len(movies)), strata, groups))
