"""Quality of E_shot on the demo world: linear place probe, trained vs random-init encoder.

Reads a finished demo run (`make demo`): shot features of the trained encoder and, for reference,
of the same architecture at its random initial weights, and a raw-pixel baseline (8×5 thumbnails).
A linear classifier (softmax regression) is fit on the shots of `train`-split movies and scored on
the shots of the other movies (cross-movie: the per-movie look is a nuisance). Reported, not asserted.

    python bench/shot_quality.py [--run runs/demo] [--world RUN/world]   (make test: a tiny run)
"""

from __future__ import annotations

import argparse
import bisect
import csv
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.catalogue import load_catalogue  # noqa: E402
from movies2scenes.config import ViTConfig  # noqa: E402
from movies2scenes.data import eval_transform, movie_shots, to_chw  # noqa: E402
from movies2scenes.features import ShotFeatures  # noqa: E402
from movies2scenes.models.folder import read_model_config  # noqa: E402
from movies2scenes.models.vit import create_vit  # noqa: E402
from movies2scenes.store import decode_keyframes, iter_tar  # noqa: E402


def linear_probe(x_tr, y_tr, x_te, y_te, classes: int, epochs: int = 300, seed: int = 0) -> float:
    torch.manual_seed(seed)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    w = torch.nn.Linear(x_tr.shape[1], classes)
    opt = torch.optim.Adam(w.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(w(x_tr), y_tr).backward()
        opt.step()
    return (w(x_te).argmax(1) == y_te).float().mean().item()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    ap.add_argument("--world", type=Path, help="the run's demo world (default: RUN/world, where make demo writes it)")
    args = ap.parse_args()
    world = args.world or args.run / "world"
    truth: dict[str, list[tuple[int, int]]] = {}  # movie → [(start_frame, place)] in order
    for r in csv.DictReader(open(world / "ground_truth" / "shots.csv")):
        truth.setdefault(r["movie_id"], []).append((int(r["start_frame"]), int(r["place"])))
    index = pq.read_table(args.run / "shots" / "index.parquet").to_pylist()
    middle = {(r["movie_id"], r["shot"]): (r["start_frame"] + r["end_frame"]) // 2 for r in index}

    def place_at(movie: str, frame: int) -> int:  # robust to detection errors: the true shot there
        starts = [s for s, _ in truth[movie]]
        return truth[movie][bisect.bisect_right(starts, frame) - 1][1]

    split = {m.movie_id: m.split for m in load_catalogue(world / "catalogue.csv")}
    feats = ShotFeatures(args.run / "shot_features")
    meta = read_model_config(args.run / "shot_encoder")
    vit = ViTConfig(**meta["vit"])
    torch.manual_seed(0)
    random_init = create_vit(vit).eval()
    tf = eval_transform(vit.img_size)

    rows = {"trained E_shot": [], "random-init ViT": [], "raw 8x5 pixels": []}
    labels, is_train = [], []
    for shard, shots in movie_shots(args.run / "shots").items():
        movie = shots[0][1]
        samples = list(iter_tar(args.run / "shots" / shard))
        frames = [decode_keyframes(s)[0] for s in samples]
        with torch.no_grad():
            rand = random_init(torch.stack([tf(to_chw(f)) for f in frames]))
        rows["trained E_shot"].append(torch.from_numpy(feats.movie(movie).astype(np.float32)))
        rows["random-init ViT"].append(rand)
        import cv2
        rows["raw 8x5 pixels"].append(torch.tensor(np.stack(
            [cv2.resize(f, (8, 5), interpolation=cv2.INTER_AREA).ravel() for f in frames]), dtype=torch.float32))
        labels += [place_at(movie, middle[(movie, i)]) for i in range(len(shots))]
        is_train += [split[movie] == "train"] * len(shots)
    y = torch.tensor(labels)
    tr = torch.tensor(is_train)
    if tr.all():  # a world with no held-out movie (a tiny one): hold out every other movie, by id
        order = sorted({shots[0][1] for shots in movie_shots(args.run / "shots").values()})
        held = set(order[1::2])
        movie_of_shot = [shots[0][1] for shots in movie_shots(args.run / "shots").values() for _ in shots]
        tr = torch.tensor([movie not in held for movie in movie_of_shot])
        print(f"place probe: no held-out movie in {world / 'catalogue.csv'}; testing on {len(held)} of {len(order)} movies")
    classes = int(y.max()) + 1
    print(f"place probe: {int(tr.sum())} train shots, {int((~tr).sum())} test shots (other movies), "
          f"{classes} places, chance {torch.bincount(y[~tr]).max().item() / int((~tr).sum()):.3f}")
    for name, chunks in rows.items():
        x = torch.cat(chunks)
        acc = linear_probe(x[tr], y[tr], x[~tr], y[~tr], classes)
        print(f"  {name:<18} dim {x.shape[1]:>4}  accuracy {acc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
