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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--world", default=None, help="demo world folder (default: RUN/world)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = Path(args.run)
    world = Path(args.world or run / "world")
    cfg = load([args.config])
    n, keep = cfg.scene_pairs.shots_per_scene, cfg.scene_pairs.keep_fraction
    places: dict[str, list[int]] = {}
    for r in csv.DictReader(open(world / "ground_truth" / "shots.csv")):
        places.setdefault(r["movie_id"], []).append(int(r["place"]))
    feats = ShotFeatures(run / "shot_features")
    embed = MovieEmbeddings(feats, run / "movie_encoder", torch.device("cpu"), cache=10**6)
    for m in feats.movie_ids:
        assert feats.num_shots(m) == len(places[m]), f"{m}: detected shots differ from ground truth"

    sources = {}
    for f in sorted((run / "movie_pairs").glob("*.parquet")):
        sources[f.stem] = sorted({(r["movie_a"], r["movie_b"]) for r in pq.read_table(f).to_pylist()})
    similar = set().union(*sources.values())
    movies = sorted({m for p in similar for m in p})
    rng = np.random.default_rng([args.seed, 7])
    size = max(len(p) for p in sources.values())
    random_pairs: set[tuple[str, str]] = set()
    while len(random_pairs) < size:
        a, b = rng.choice(len(movies), 2, replace=False)
        key = tuple(sorted((movies[a], movies[b])))
        if key not in similar:
            random_pairs.add(key)
    sources["random movie pairs"] = sorted(random_pairs)

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
