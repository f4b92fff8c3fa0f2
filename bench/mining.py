"""Scene-pair mining speed (issue 5), measured side by side in one run.

1. M = N = 4000 shots, d = 512: mining (window scores + greedy selection) ÷ the adjacency matmul
   X₁X₂ᵀ itself (target ≤ 2). Median of --repeats, interleaved.
2. Speed-up over the naive reference (`testkit.oracles.mine_pair_reference`: loops + full sort) at sizes the
   reference can finish, with identical output checked.
3. Growth with movie length: mining time at M = N ∈ {1000, 2000, 4000}, power-law fit t ∝ M^α.
4. A whole catalogue's pairs at demo scale: every movie pair of a finished demo run's S
   (`runs/demo`, if present) through the stage's own embeddings.

    python bench/mining.py [--device cpu|cuda] [--repeats 5] [--run runs/demo]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.mining import mine_pair
from testkit.oracles import mine_pair_reference


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def features(m: int, d: int, seed: int, device) -> torch.Tensor:
    # shot features with scene structure: runs of similar shots (so windows have real peaks)
    g = torch.Generator().manual_seed(seed)
    scenes = torch.randn(m // 8 + 1, d, generator=g)
    x = scenes.repeat_interleave(8, 0)[:m] + 0.5 * torch.randn(m, d, generator=g)
    return x.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("-n", type=int, default=9)
    ap.add_argument("--smoke", action="store_true", help="every part at small sizes, once (seconds; make test runs it)")
    args = ap.parse_args()
    device, n = torch.device(args.device), args.n
    big, growth, naive = (4000, [1000, 2000, 4000], (60, 120, 200)) if not args.smoke else (400, [100, 200, 400], (30,))
    if args.smoke:
        args.repeats = 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; n = {n} shots per scene; keep 50 %")

    # 1. ratio at 4000 × 4000
    x1, x2 = features(big, 512, 0, device), features(big, 512, 1, device)
    timed(lambda: x1 @ x2.T, device), timed(lambda: mine_pair(x1, x2, n), device)  # warm-up
    t_mm, t_mine = [], []
    for _ in range(args.repeats):
        t_mm.append(timed(lambda: x1 @ x2.T, device)[0])
        dt, mined = timed(lambda: mine_pair(x1, x2, n), device)
        t_mine.append(dt)
    mm, mine = statistics.median(t_mm), statistics.median(t_mine)
    print(f"\n[1] M = N = {big}, d = 512: matmul {mm * 1e3:.1f} ms, mining {mine * 1e3:.1f} ms "
          f"→ mining ÷ matmul = {mine / mm:.2f} (target ≤ 2); {mined.chosen} chosen, {len(mined)} kept")

    # 2. speed-up over the naive reference (identical output)
    print("\n[2] naive reference (loops + full sort) vs ours, same output:")
    for m in naive:
        a, b = features(m, 64, 2, "cpu"), features(m, 64, 3, "cpu")
        t_ref, ref = timed(lambda: mine_pair_reference(a.numpy(), b.numpy(), n), torch.device("cpu"))
        t_ours = statistics.median(timed(lambda: mine_pair(a, b, n), torch.device("cpu"))[0] for _ in range(5))
        ours = mine_pair(a, b, n)
        same = np.array_equal(ours.start_a, ref.start_a) and np.array_equal(ours.start_b, ref.start_b)
        print(f"    M = N = {m:4d}, d = 64: naive {t_ref * 1e3:9.1f} ms, ours {t_ours * 1e3:7.2f} ms → "
              f"speed-up {t_ref / t_ours:7.0f}×  (identical: {same})")

    # 3. growth with movie length
    print("\n[3] growth with movie length (d = 512):")
    sizes, times = growth, []
    for m in sizes:
        a, b = features(m, 512, 4, device), features(m, 512, 5, device)
        timed(lambda: mine_pair(a, b, n), device)
        times.append(statistics.median(timed(lambda: mine_pair(a, b, n), device)[0] for _ in range(args.repeats)))
        print(f"    M = N = {m}: {times[-1] * 1e3:.1f} ms")
    alpha = np.polyfit(np.log(sizes), np.log(times), 1)[0]
    print(f"    fit t ∝ M^{alpha:.2f} (M·N work would be 2.0)")

    # 4. a whole catalogue at demo scale
    run = Path(args.run)
    if (run / "scene_pairs" / "DONE.json").is_file():
        import pyarrow.parquet as pq

        from movies2scenes.features import ShotFeatures
        from movies2scenes.artefacts import MovieEmbeddings

        source = json.loads((run / "scene_pairs" / "DONE.json").read_text())["counts"]["source"]
        pairs = sorted({(r["movie_a"], r["movie_b"]) for r in pq.read_table(run / "movie_pairs" / f"{source}.parquet").to_pylist()})
        embed = MovieEmbeddings(ShotFeatures(run / "shot_features"), run / "movie_encoder", device, cache=10**6)
        t_embed, _ = timed(lambda: [embed(m) for p in pairs for m in p], device)
        t_all, results = timed(lambda: [mine_pair(embed(a), embed(b), n) for a, b in pairs], device)
        shots = np.mean([embed(m).shape[0] for p in pairs for m in p])
        print(f"\n[4] demo catalogue ({run}): {len(pairs)} {source} movie pairs, {shots:.0f} shots per movie on "
              f"average: embeddings {t_embed:.2f} s, mining {t_all:.2f} s "
              f"({t_all / len(pairs) * 1e3:.1f} ms per movie pair), {sum(len(r) for r in results)} scene pairs")
    else:
        print(f"\n[4] skipped: {run} has no finished scene_pairs stage (run `make demo`)")


if __name__ == "__main__":
    main()
