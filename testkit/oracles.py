"""Reference implementations the library's fast paths are checked against: the literal, slow
definitions, kept out of the package.

* :func:`mine_pair_reference` — the scene-pair mining rule by loops and a full sort
  (``movies2scenes.mining.mine_pair`` computes it without sorting);
* :func:`cowatch_pairs` — co-watch pairs in memory, per user in time order
  (``movies2scenes.cowatch`` does the same in SQL, out of core).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from movies2scenes.mining import Mined, _empty, check_inputs, keep_count
from movies2scenes.similarity import Pairs, _top


def mine_pair_reference(x1: np.ndarray, x2: np.ndarray, n: int = 9, keep_fraction: float = 0.5) -> Mined:
    """The definition, literally and slowly: every window's mean by a loop, all windows sorted by
    (−score, i, j), scanned with an explicit overlap test. For tests and the benchmark only."""
    reason = check_inputs(x1, x2, n)
    if reason:
        return _empty(reason)
    a = np.asarray(x1, np.float64) @ np.asarray(x2, np.float64).T
    r, c = a.shape[0] - n + 1, a.shape[1] - n + 1
    windows = []
    for i in range(r):
        for j in range(c):
            windows.append((-float(a[i:i + n, j:j + n].mean()), i, j))
    windows.sort()
    chosen: list[tuple[int, int, float]] = []
    for neg, i, j in windows:
        if all(abs(i - ci) >= n and abs(j - cj) >= n for ci, cj, _ in chosen):
            chosen.append((i, j, -neg))
    k = keep_count(len(chosen), keep_fraction)
    kept = chosen[:k]
    return Mined(np.asarray([i for i, _, _ in kept], np.int64), np.asarray([j for _, j, _ in kept], np.int64),
                 np.asarray([s for *_, s in kept], np.float32), len(chosen), None)


def cowatch_pairs(users: list[str], movies: list[str], timestamps: list[float], allowed: set[str],
                  per_movie: int = 3, lookahead: int = 1) -> Pairs:
    out = Pairs()
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    seen: set[tuple[str, str, float]] = set()
    for i, (u, m, t) in enumerate(zip(users, movies, timestamps)):
        if m not in allowed:
            out.skipped["events of excluded movies"] = out.skipped.get("events of excluded movies", 0) + 1
            continue
        if (u, m, t) in seen:
            out.skipped["duplicate log rows"] = out.skipped.get("duplicate log rows", 0) + 1
            continue
        seen.add((u, m, t))
        events[u].append((t, i, m))  # file order breaks timestamp ties
    follows: dict[str, Counter] = defaultdict(Counter)
    for seq in events.values():
        seq.sort()
        for j, (_, _, m) in enumerate(seq):
            for _, _, n in seq[j + 1:j + 1 + lookahead]:
                if n != m:
                    follows[m][n] += 1
    for m in sorted(follows):
        for n, count in _top(follows[m], per_movie):
            out.add(m, n, float(count))
    return out
