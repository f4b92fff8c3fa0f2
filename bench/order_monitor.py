"""What the order monitor of `factorised.keep: order` reads on trained scene-encoder cells (issue 40).

For each quality-bench cell named, the cell's saved temporal head on its own shot features, scored by
both monitor designs: the first (the kNN monitor's windows — n shots at even offsets of 16 held-out
movies) and the second (`monitor.make_order_monitor`: 4-shot windows at pseudo scene starts of up to
64 held-out movies). A positive control for the monitor: heads the evaluation's arrow task scores high
must read above 0.5, the mean exactly 0.5.

    python bench/order_monitor.py --work bench/_work/quality-r3/film-demo+100eval CELL [CELL ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    from movies2scenes.catalogue import eval_only_movies
    from movies2scenes.features import ShotFeatures
    from movies2scenes.models.factorised import load_temporal
    from movies2scenes.monitor import OrderMonitor, make_feature_knn_monitor, make_order_monitor
    from movies2scenes.stages.train_scene_encoder import scene_pair_movies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="a quality bench world folder (base/, cells/)")
    ap.add_argument("cells", nargs="+", help="cell folder names under WORK/cells")
    args = ap.parse_args()
    eval_only = eval_only_movies(str(args.work / "base" / "world" / "catalogue.csv"))
    print("| cell | first design (kNN monitor's windows) | second design (pseudo scene starts) |")
    print("|---|---|---|")
    for name in args.cells:
        cell = args.work / "cells" / name
        settings = json.loads((cell / "scene_encoder" / "movies2scenes.json").read_text())
        head = load_temporal(cell / "scene_encoder", settings["temporal"]).eval()
        n = int(settings["shots_per_scene"])
        features = ShotFeatures(cell / "shot_features")
        train = set(scene_pair_movies(cell / "scene_pairs"))
        knn = make_feature_knn_monitor(features, train, 16, 16, 0, n, eval_only=eval_only)
        first = OrderMonitor(knn.views, knn.labels.numpy(), features.dim, 0)
        second = make_order_monitor(features, train, 64, n, 0, eval_only)
        print(f"| {name} | {first(head):.3f} ({len(first.views)} windows) | {second(head):.3f} "
              f"({len(second.views)} windows, {second.movies} movies) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
