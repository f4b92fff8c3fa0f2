"""Quality of mined scene pairs on the demo world (issue 5), against the world's ground truth.

A mined scene pair is *correct* when both scenes are mostly of the same place: the place that
covers most of scene a's n shots is also the place that covers most of scene b's (ground truth
`world/ground_truth/shots.csv`; shots are matched by index, which detection reproduces exactly on
the demo world, P/R = 1.0). Reported, side by side, for

* mined pairs of each similar-movie source (co-watch, genre, ...) present in the run,
* mined pairs of as many *random* movie pairs (seeded, outside every source),
* random scene pairs (random starts) inside the same co-watch movie pairs: what choosing the movie
  pair alone gives, without mining.

Uses the run's own E_movie (without its last FC) and the stage's settings (n, keep fraction).

    python bench/scene_pair_quality.py [--run runs/demo] [--world runs/demo/world]
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.config import load  # noqa: E402
from movies2scenes.features import ShotFeatures  # noqa: E402
from movies2scenes.mining import mine_pair  # noqa: E402
from movies2scenes.artefacts import MovieEmbeddings  # noqa: E402


def majority(places: list[int]) -> int:
    counts = Counter(places)
    best = max(counts.values())
    return min(p for p, c in counts.items() if c == best)


def precision(pairs, places, n) -> tuple[float, int]:
    ok = [majority(places[a][i:i + n]) == majority(places[b][j:j + n]) for a, i, b, j in pairs]
    return (float(np.mean(ok)) if ok else float("nan")), len(ok)


def detected_places(run: Path, truth: dict[str, list[tuple[int, int, int]]]) -> tuple[dict[str, list[int]], int]:
    """The ground-truth place of every *detected* shot (the place covering most of its frames), so
    that a few missed or invented cuts move a score a little instead of stopping the bench; and
    the number of movies whose detected shots differ from the true ones."""
    rows = pq.read_table(run / "shots" / "index.parquet", columns=["movie_id", "start_frame", "end_frame"]).to_pylist()
    shots: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        shots.setdefault(r["movie_id"], []).append((r["start_frame"], r["end_frame"]))
    places, mismatched = {}, 0
    for movie, detected in shots.items():
        true = truth[movie]
        mismatched += [(a, b) for a, b, _ in true] != detected
        out = []
        for a, b in detected:
            cover = Counter()
            for ta, tb, place in true:
                cover[place] += max(0, min(b, tb) - max(a, ta))
            out.append(max(sorted(cover), key=lambda p: cover[p]))
        places[movie] = out
    return places, mismatched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--world", default=None, help="demo world folder (default: RUN/world)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "cpu-tiny.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = Path(args.run)
    world = Path(args.world or run / "world")
    cfg = load([args.config])
    n, keep = cfg.scene_pairs.shots_per_scene, cfg.scene_pairs.keep_fraction
    truth: dict[str, list[tuple[int, int, int]]] = {}  # movie → (start_frame, end_frame, place) per true shot
    for r in csv.DictReader(open(world / "ground_truth" / "shots.csv")):
        truth.setdefault(r["movie_id"], []).append((int(r["start_frame"]), int(r["end_frame"]), int(r["place"])))
    feats = ShotFeatures(run / "shot_features")
    embed = MovieEmbeddings(feats, run / "movie_encoder", torch.device("cpu"), cache=10**6)
    places, mismatched = detected_places(run, truth)
    print(f"shots: {sum(map(len, places.values()))} detected, {sum(map(len, truth.values()))} in the ground truth; "
          f"{mismatched} movie(s) where detection differs (each detected shot takes the place of the true "
          "shots covering most of its frames)")

    sources = {}
    for f in sorted((run / "movie_pairs").glob("*.parquet")):
        sources[f.stem] = sorted({(r["movie_a"], r["movie_b"]) for r in pq.read_table(f).to_pylist()})
    similar = set().union(*sources.values())
    movies = sorted({m for p in similar for m in p})
    rng = np.random.default_rng([args.seed, 7])
    size = max(len(p) for p in sources.values())
    # as many random pairs outside every source as the largest source has (or all there are: a small
    # catalogue may have fewer — the loop that drew them until it had enough never ended there)
    others = [(a, b) for i, a in enumerate(movies) for b in movies[i + 1:] if (a, b) not in similar]
    pick = rng.choice(len(others), min(size, len(others)), replace=False) if others else []
    sources["random movie pairs"] = sorted(others[int(i)] for i in pick)

    print(f"run {run}: n = {n} shots per scene, keep {keep:.0%}; precision = share of scene pairs whose "
          "scenes are mostly of the same place")
    print(f"{'movie pairs':<22} {'movie pairs':>11} {'scene pairs':>11} {'precision':>9}")
    for name, pairs in sources.items():
        mined = []
        for a, b in pairs:
            m = mine_pair(embed(a), embed(b), n, keep)
            mined += [(a, int(i), b, int(j)) for i, j in zip(m.start_a, m.start_b)]
        p, count = precision(mined, places, n)
        print(f"{name:<22} {len(pairs):>11} {count:>11} {p:>9.3f}")
    if "cowatch" in sources:
        draws = []
        for a, b in sources["cowatch"]:
            la, lb = len(places[a]) - n + 1, len(places[b]) - n + 1
            if la > 0 and lb > 0:
                draws += [(a, int(rng.integers(la)), b, int(rng.integers(lb))) for _ in range(3)]
        p, count = precision(draws, places, n)
        print(f"{'cowatch, random scenes':<22} {len(sources['cowatch']):>11} {count:>11} {p:>9.3f}")


if __name__ == "__main__":
    main()
