"""Tasks that only shot order can solve, from a film-grammar world's ground truth (issue 39).

Every source window gives one clip of *each* class, made of the very same shots in another order,
so the classes hold identical multisets of shots and any order-blind representation (a mean of shot
features) is at chance by construction — exactly, since both clips of a source sit in the same
movie and so in the same fold. Windows are ``LENGTH`` shots of one scene (montages left out):

* ``arrow``        — a scene's first shots forward vs reversed;
* ``shuffled``     — the same window intact vs shuffled (a seeded permutation whose set-up sequence
  differs from the intact one: a shuffle that keeps it cannot be told even in principle);
* ``coverage``     — a dialogue's two close-ups of each speaker cut alternating A B A B vs blocked
  A A B B (the first speaker first in both);
* ``establishing`` — an establishing scene's wide shot first (as shot) vs last, before the same three
  coverage shots.

Rows use the task CSV's ``shots`` column (the explicit order)."""

from __future__ import annotations

import numpy as np

LENGTH = 4
TASKS = ("arrow", "shuffled", "coverage", "establishing")


def order_rows(scenes: dict[tuple[str, int], list[dict]], seed: int = 0) -> dict[str, list[list]]:
    """Task name → CSV rows ``[task, kind, movie_id, start_shot, end_shot, label, shots]`` from the
    ground-truth shot rows of each (movie, scene) (dicts with ``shot``, ``setup``, ``scene_type``)."""
    rows: dict[str, list[list]] = {t: [] for t in TASKS}

    def add(task: str, movie: str, label: str, shots: list[int]) -> None:
        rows[task].append([task, "classification", movie, min(shots), max(shots) + 1, label,
                           " ".join(str(s) for s in shots)])

    for (movie, scene), shot_rows in sorted(scenes.items()):
        kind = shot_rows[0].get("scene_type", "")
        if kind == "montage" or len(shot_rows) < LENGTH:
            continue
        shots = [int(r["shot"]) for r in shot_rows]
        setups = [r["setup"] for r in shot_rows]
        window, window_setups = shots[:LENGTH], setups[:LENGTH]
        add("arrow", movie, "forward", window)
        add("arrow", movie, "reversed", window[::-1])
        rng = np.random.default_rng([seed, 59, int(movie.encode().hex(), 16) % (2 ** 32), scene])
        for _ in range(100):
            perm = [int(i) for i in rng.permutation(LENGTH)]
            if [window_setups[i] for i in perm] != window_setups:
                add("shuffled", movie, "intact", window)
                add("shuffled", movie, "shuffled", [window[i] for i in perm])
                break
        if kind == "dialogue":
            a = [s for s, u in zip(shots, setups) if u == "close-up A"]
            b = [s for s, u in zip(shots, setups) if u == "close-up B"]
            if len(a) >= 2 and len(b) >= 2:
                first, second = (a, b) if a[0] < b[0] else (b, a)
                add("coverage", movie, "alternating", [first[0], second[0], first[1], second[1]])
                add("coverage", movie, "blocked", [first[0], first[1], second[0], second[1]])
        if kind == "establishing" and setups[0] == "wide":
            add("establishing", movie, "wide first", window)
            add("establishing", movie, "wide last", window[1:] + window[:1])
    return rows
