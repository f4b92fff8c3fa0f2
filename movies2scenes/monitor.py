"""What shows that a MoCo encoder is learning (a MoCo loss rises while its queue fills).

* ``models.moco.topk_accuracy`` — how often the positive is the top-1 / top-5 logit among the
  1 + K logits (facebookresearch/moco's ``main_moco.py`` prints the same); chance is k / (1 + K).
* :class:`KnnMonitor` — a weighted kNN classifier (Wu et al. 2018, as lightly's
  ``BenchmarkModule``) on a small probe set of the current query encoder's embeddings. Labels need no
  annotation: the label of a shot (or scene) is its **movie**; each probe movie's first half of
  items is the memory bank, the second half are the queries ("which movie is this later shot
  from?"), so adjacent, near-identical shots never face each other. Chance is 1 / probe movies.
  The probe movies are held out of training where the catalogue has other splits; movies of the
  catalogue's ``eval`` split are never probe movies (the kept step must not be chosen on them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def spread(starts: list[int], per_movie: int) -> list[int]:
    """Up to ``per_movie`` of ``starts``, evenly spread from the first to the last."""
    return [starts[i] for i in np.unique(np.linspace(0, len(starts) - 1, min(per_movie, len(starts))).round().astype(int))]


def probe_items(shots_dir: str | Path, movies: dict[str, list[tuple[str, str]]], shards: list[str],
                size: int, per_movie: int, shots_per_item: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Eval views of up to ``per_movie`` items of each probe shard's movie: (views, label, is_query).

    ``shots_per_item`` = 0: one shot's first keyframe per item, views (P, 3, S, S); n > 0: scenes of
    n consecutive shots × k keyframes, views (P, n, k, 3, S, S). Items are spread evenly over the
    movie; the first half are memory, the second half queries."""
    from .data import eval_transform
    from .integrity import verified
    from .store import decode_keyframes, iter_tar

    tf = eval_transform(size)
    views, labels, query = [], [], []
    for label, shard in enumerate(shards):
        keys = [k for k, _ in movies[shard]]
        wanted_keys = set(keys)
        samples = {s["__key__"]: s for s in iter_tar(verified(Path(shots_dir) / shard)) if s["__key__"] in wanted_keys}
        n = max(1, shots_per_item)
        starts = list(range(0, len(keys) - n + 1, n))
        if len(starts) < 2:
            continue
        pick = spread(starts, per_movie)
        for j, s in enumerate(pick):
            frames = [decode_keyframes(samples[keys[t]]) for t in range(s, s + n)]  # each (k, h, w, 3)
            if shots_per_item:
                v = torch.stack([tf(torch.from_numpy(f).permute(0, 3, 1, 2)) for f in frames])  # (n, k, 3, S, S)
            else:
                v = tf(torch.from_numpy(frames[0][:1]).permute(0, 3, 1, 2))[0]
            views.append(v)
            labels.append(label)
            query.append(j >= len(pick) / 2)
    if not views:
        return torch.zeros(0), np.zeros(0, int), np.zeros(0, bool)
    return torch.stack(views), np.asarray(labels), np.asarray(query)


@torch.no_grad()
def embed(encoder: torch.nn.Module, views: torch.Tensor, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``encoder``'s (eval mode) embeddings of ``views``, ``batch`` at a time, as float32 on the CPU."""
    was_training = encoder.training
    encoder.eval()
    try:
        return torch.cat([encoder(views[i:i + batch].to(device)).float().cpu() for i in range(0, len(views), batch)])
    finally:
        encoder.train(was_training)


class KnnMonitor:
    """Weighted kNN top-1 of an encoder on fixed probe views (see module doc)."""

    def __init__(self, views: torch.Tensor, labels: np.ndarray, is_query: np.ndarray, k: int = 10,
                 temperature: float = 0.1, batch: int = 64, held_out: bool = True):
        self.views, self.k, self.t, self.batch = views, k, temperature, batch
        self.labels = torch.as_tensor(labels)
        self.is_query = torch.as_tensor(is_query, dtype=torch.bool)
        self.movies = int(len(set(labels.tolist())))
        self.held_out = held_out

    @property
    def usable(self) -> bool:
        return self.movies >= 2 and bool(self.is_query.any()) and bool((~self.is_query).any())

    @property
    def queries(self) -> int:
        return int(self.is_query.sum())

    @property
    def chance(self) -> float:
        """Top-1 of always answering the most frequent query movie."""
        q = self.labels[self.is_query]
        return float(torch.bincount(q).max()) / len(q) if len(q) else float("nan")

    def __call__(self, encoder: torch.nn.Module, device: torch.device | str = "cpu") -> float:
        emb = F.normalize(embed(encoder, self.views, self.batch, device), dim=1)
        bank, bank_labels = emb[~self.is_query], self.labels[~self.is_query]
        sims = emb[self.is_query] @ bank.T
        top, idx = sims.topk(min(self.k, len(bank)), dim=1)
        votes = torch.zeros(len(top), int(self.labels.max()) + 1)
        votes.scatter_add_(1, bank_labels[idx], (top / self.t).exp())
        return float((votes.argmax(1) == self.labels[self.is_query]).float().mean())


class OrderMonitor:
    """Held-out order accuracy of an encoder of shot-feature windows (``factorised.keep: order``).

    Each probe window (:func:`make_order_monitor`: windows that start where a held-out movie's scenes
    probably start) is embedded as it is, with its scene's shots reversed and with them shuffled (a
    seeded order other than their own; in a context window the scene's shots only, in place —
    :meth:`PretextTerms.reorderings`). A logistic probe
    (scikit-learn: standardised features, C = :attr:`C`) tells forward from reversed and intact from
    shuffled, each scored by 2-fold cross-validation grouped by movie (both copies of a window sit in
    one fold). The result is the mean of the two held-out accuracies: exactly 0.5 for an encoder
    blind to order — both copies embed alike, so the probe answers both the same — as step 0 (the
    mean of the shot features) is. No global random numbers are drawn (training's are untouched)."""

    C = 0.1
    folds = 2

    def __init__(self, views: torch.Tensor, labels: np.ndarray, dim: int, seed: int, batch: int = 64):
        from .models.pretext import PretextTerms

        self.views, self.labels, self.batch = views, np.asarray(labels), batch
        self.others = PretextTerms.reorderings(views, dim, torch.Generator().manual_seed(seed))  # shuffled, reversed

    @property
    def movies(self) -> int:
        return len(np.unique(self.labels))

    def __call__(self, encoder: torch.nn.Module, device: torch.device | str = "cpu") -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        own = embed(encoder, self.views, self.batch, device).numpy()
        y = np.repeat([0, 1], len(own))
        groups = np.concatenate([self.labels, self.labels])
        folds = min(self.folds, self.movies)
        accuracies = []
        for other in self.others:
            x = np.concatenate([own, embed(encoder, other, self.batch, device).numpy()])
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
            accuracies.append(float(cross_val_score(probe, x, y, groups=groups, cv=GroupKFold(folds)).mean()))
        return float(np.mean(accuracies))


def pseudo_scene_starts(rows: np.ndarray, every: int) -> np.ndarray:
    """Where a movie's scenes probably start, from its (N, d) shot features alone: after each of its
    ⌊N / ``every``⌋ least-alike neighbouring shots (cosine) — the pseudo boundary of BaSSL and of the
    boundary term. Sorted shot indices."""
    x = np.asarray(rows, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    gaps = (x[:-1] * x[1:]).sum(1)  # gaps[i]: between shot i and shot i + 1
    return np.sort(np.argsort(gaps, kind="stable")[:max(1, len(x) // every)]) + 1


ORDER_LENGTH = 4  # the order monitor's windows: a scene's first shots (as eval/order.py's tasks read them)


def make_order_monitor(features, train_movies: set[str], movies_wanted: int, n: int, seed: int,
                       eval_only: set[str] = frozenset(), context: int = 0) -> OrderMonitor | None:
    """An :class:`OrderMonitor` over up to ``movies_wanted`` movies of ``shot_features/`` chosen as
    the kNN monitor chooses them (held-out first, seeded, never one of ``eval_only``): at each
    pseudo scene start (:func:`pseudo_scene_starts`, one per ``n`` shots) a window of the next
    ``min(ORDER_LENGTH, n)`` shots — read in the movie's context with ``context``. Windows at random
    offsets would not do: reversing a window that straddles scenes yields another plausible window,
    and a head that reads a scene's order (wide shot first, then coverage) tells them apart at chance
    (issue 40: 0.49–0.51 for heads the evaluation's arrow task scores 0.75–0.81). None with fewer
    than 2 movies with a window."""
    from .models.factorised import window_rows

    chosen, _ = probe_movies(sorted(set(features.movie_ids) - set(eval_only)), lambda m: m not in train_movies,
                             movies_wanted, seed)
    length = min(ORDER_LENGTH, n)
    views, labels = [], []
    for label, movie in enumerate(chosen):
        rows = features.movie(movie)
        for s in pseudo_scene_starts(rows, n):
            if s + length <= len(rows):
                views.append(torch.from_numpy(window_rows(rows, range(s, s + length), context, context)))
                labels.append(label)
    if len(set(labels)) < 2:
        return None
    return OrderMonitor(torch.stack(views), np.asarray(labels), features.dim, seed)


def gain_over_start(history: list, queries: int, chance: float, kept: float | None = None) -> dict | None:
    """What training bought on the kNN monitor: its top-1 at step 0 (the starting weights) against
    the weights a stage saves (``kept``; else the last evaluation), with the noise of the monitor —
    an approximate 95 % bound, 2·√(2·p(1−p)/queries), for two top-1s on the same ``queries`` probe
    shots (p their mean). The verdict: "gained" or "lost" beyond it, else "no measurable gain over
    initialisation". None when step 0 was not evaluated."""
    import math

    if not history or history[0][0] != 0 or queries < 1:
        return None
    if len(history) == 1 and kept is None:  # 0 steps: the starting weights as they are
        start = float(history[0][1])
        return {"start": start, "end": start, "gain": 0.0, "noise": 0.0, "chance": chance, "queries": queries,
                "verdict": "not trained (0 steps): the starting weights, saved as they are"}
    start = float(history[0][1])
    end = float(history[-1][1] if kept is None else kept)
    p = min(max((start + end) / 2, 1 / queries), 1 - 1 / queries)
    noise = 2 * math.sqrt(2 * p * (1 - p) / queries)
    gain = end - start
    verdict = "gained" if gain > noise else "lost" if gain < -noise else "no measurable gain over initialisation"
    return {"start": start, "end": end, "gain": gain, "noise": noise, "chance": chance, "queries": queries,
            "verdict": verdict}


def gain_text(g: dict) -> str:
    """One line of :func:`gain_over_start`'s result, for the summary and the logs."""
    if g["verdict"].startswith("not trained"):
        return f"kNN movie top-1 {g['start']:.3f} (chance {g['chance']:.3f}) — {g['verdict']}"
    return (f"kNN movie top-1 {g['start']:.3f} at its start → {g['end']:.3f} saved (chance {g['chance']:.3f}): "
            f"{g['gain']:+.3f} ± {g['noise']:.3f} — {g['verdict']}")


def probe_movies(keys: list[str], is_held_out, wanted: int, seed: int) -> tuple[list[str], bool]:
    """Up to ``wanted`` of ``keys`` (sorted) in a seeded order, held-out ones (``is_held_out``) only
    when there are at least 2 of them; and whether they are held out."""
    rng = np.random.default_rng([seed, 77])
    order = [keys[i] for i in rng.permutation(len(keys))]
    held = [k for k in order if is_held_out(k)]
    return sorted(held[:wanted] if len(held) >= 2 else order[:wanted]), len(held) >= 2


def make_knn_monitor(shots_dir: Path, train_movies: set[str], size: int, movies_wanted: int, per_movie: int,
                     seed: int, shots_per_item: int = 0, eval_only: set[str] = frozenset()) -> KnnMonitor | None:
    """A monitor over up to ``movies_wanted`` movies of the shots stage, held-out ones first
    (movies not in ``train_movies``), never one of ``eval_only``; None when the shots stage has
    fewer than 2 usable movies."""
    from .data import movie_shots

    movies = {s: rows for s, rows in movie_shots(shots_dir).items() if rows[0][1] not in eval_only}
    chosen, held_out = probe_movies(sorted(movies), lambda s: movies[s][0][1] not in train_movies, movies_wanted, seed)
    views, labels, query = probe_items(shots_dir, movies, chosen, size, per_movie, shots_per_item)
    monitor = KnnMonitor(views, labels, query, held_out=held_out)
    return monitor if monitor.usable else None


def make_feature_knn_monitor(features, train_movies: set[str], movies_wanted: int, per_movie: int, seed: int,
                             shots_per_item: int, eval_only: set[str] = frozenset(),
                             context: int = 0) -> KnnMonitor | None:
    """:func:`make_knn_monitor` for an encoder of shot-feature windows: the probe items are windows
    of ``shots_per_item`` consecutive rows of ``shot_features/`` (views (P, n, d); with ``context``
    each in its movie's context, (P, context, d + 2) as the encoder trains on them), the same movie
    choice (held-out first, seeded) and memory/query halves; None with fewer than 2 usable movies."""
    from .models.factorised import window_rows

    chosen, held_out = probe_movies(sorted(set(features.movie_ids) - set(eval_only)), lambda m: m not in train_movies,
                                    movies_wanted, seed)
    n = shots_per_item
    views, labels, query = [], [], []
    for label, movie in enumerate(chosen):
        starts = list(range(0, features.num_shots(movie) - n + 1, n))
        if len(starts) < 2:
            continue
        pick = spread(starts, per_movie)
        rows = features.movie(movie)
        for j, s in enumerate(pick):
            views.append(torch.from_numpy(window_rows(rows, range(s, s + n), context, context)))
            labels.append(label)
            query.append(j >= len(pick) / 2)
    if not views:
        return None
    monitor = KnnMonitor(torch.stack(views), np.asarray(labels), np.asarray(query), held_out=held_out)
    return monitor if monitor.usable else None
