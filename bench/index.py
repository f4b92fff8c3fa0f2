"""The scene index at catalogue size (issue 43): `m2s index`'s own builder
(`retrieval.build_search_index`, the kind `--index auto` picks) on clustered synthetic 768-d
embeddings — build time, index bytes, the build's peak RSS, p50/p99 latency of one query (k = 10),
and recall@10 against exact search on held-back queries (drawn from the same clusters, never
indexed) — each size in its own process so that its peak RSS is its own.

    python bench/index.py                      # 10⁵ and 3·10⁵ windows (minutes on 2 cores)
    python bench/index.py --sizes 1000000 5000000   # the issue's sizes (15 GB of float32 at 5·10⁶)
    python bench/index.py --smoke              # 20,000 and 40,000 64-d windows, flat-max 5,000 (make test)
    python bench/index.py --sizes 200000 --kinds ivfpq ivfpqr ivfpqr:8 ivfsq8 hnsw   # the kinds side by side
    python bench/index.py --real RUN/shot_features --flat-max 0 --kinds ivfpq ivfsq8   # real windows

The data: 1,000 cluster centres of norm ≈ 1 and points at noise norm ≈ 0.7 around them (seeded) —
a stand-in with the clustered shape of scene embeddings (sliding windows of one scene sit close
together), not real embeddings. Printed per size: the plan (factory string), build seconds, index
MB and its ratio to the flat float32 size, peak RSS, p50/p99 ms, recall@10; and the growth
exponent of build time between the first and the last size (≤ 1: linear or better)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM, CLUSTERS = 768, 1000  # --dim changes DIM (the smoke: 64, so that PQ trains in seconds)


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for a in range(0, n, 100_000):  # in chunks: no float64 copy of the whole matrix
        b = min(n, a + 100_000)
        out[a:b] = centres[rng.integers(0, len(centres), b - a)] + rng.normal(0, 0.7 / math.sqrt(DIM), (b - a, DIM))
    return out


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clustered windows to index and ``queries`` held-back ones from the same clusters."""
    centres = np.random.default_rng(0).normal(0, 1 / math.sqrt(DIM), (CLUSTERS, DIM)).astype(np.float32)
    return clustered(n, 1, centres), clustered(queries, 2, centres)


def real_windows(features_dir: str, n: int = 9, query_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Real scene windows — the mean of each n consecutive stored shot features (stride 1: what the
    factorised encoder gives at step 0) of a ``shot_features/`` folder — the windows of every
    ``query_every``-th movie (sorted ids) held back as queries, the rest indexed."""
    from movies2scenes.features import ShotFeatures

    features = ShotFeatures(features_dir)
    index, held = [], []
    for i, movie in enumerate(sorted(features.movie_ids)):
        rows = np.asarray(features.movie(movie), np.float32)
        if len(rows) < n:
            continue
        means = np.cumsum(np.concatenate([np.zeros((1, rows.shape[1]), np.float32), rows]), 0, dtype=np.float64)
        (held if i % query_every == 0 else index).append(((means[n:] - means[:-n]) / n).astype(np.float32))
    return np.concatenate(index), np.concatenate(held)


def one_size(n: int, flat_max: int, queries: int, kind: str = "auto", k_factor: int = 4, real: str = "") -> dict:
    import faiss

    from movies2scenes.retrieval import build_search_index

    x, q = real_windows(real) if real else synthetic(n, queries)
    n = len(x)
    t = time.perf_counter()
    index, record = build_search_index(x, "cosine", kind, flat_max=flat_max, k_factor=k_factor)
    build = time.perf_counter() - t
    size = len(faiss.serialize_index(index))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    truth = np.argsort(-(qn @ xn.T), axis=1)[:, :10]  # exact top 10 of the held-back queries
    got, lat = [], []
    for v in qn:
        t = time.perf_counter()
        _, ids = index.search(v[None], 10)
        lat.append(time.perf_counter() - t)
        got.append(ids[0])
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)]))
    return {"n": n, "factory": record["factory"] + "".join(f" {k}={v}" for k, v in sorted(record["params"].items())),
            "build_s": build, "index_mb": size / 2**20,
            "flat_mb": n * x.shape[1] * 4 / 2**20, "queries": len(q), "dim": x.shape[1], "peak_rss_mb": peak_rss_mb(), "p50_ms": 1000 * float(np.median(lat)),
            "p99_ms": 1000 * float(np.percentile(lat, 99)), "recall_at_10": recall,
            "build_recall_at_10": record.get("recall_at_10")}


def main() -> int:
    global DIM
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--flat-max", type=int, default=None, help="auto's switch point (default: m2s index's)")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--dim", type=int, default=DIM)
    ap.add_argument("--kinds", nargs="+", default=["auto"], metavar="KIND[:K]",
                    help="index kinds to compare at every size (m2s index --index; ivfpqr:8 = k_factor_rf 8)")
    ap.add_argument("--real", metavar="SHOT_FEATURES", default="",
                    help="instead of synthetic data: real windows (means of 9 consecutive shots, stride 1) of a "
                    "shot_features/ folder, every 10th movie's windows held back as queries; --sizes is ignored")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size, JSON on stdout
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.flat_max, args.queries, args.dim = [20_000, 40_000], 5_000, 100, 64
    DIM = args.dim
    if args.flat_max is None:
        from movies2scenes.retrieval import FLAT_MAX

        args.flat_max = FLAT_MAX
    if args.one:
        kind, _, k = args.kinds[0].partition(":")
        print(json.dumps(one_size(args.one, args.flat_max, args.queries, kind, int(k or 4), args.real)))
        return 0
    rows = []
    for n in [0] if args.real else args.sizes:
        for kind in args.kinds:
            out = subprocess.run([sys.executable, __file__, "--one", str(n or 1), "--flat-max", str(args.flat_max),
                                  "--queries", str(args.queries), "--dim", str(DIM), "--kinds", kind,
                                  "--real", args.real], capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                raise SystemExit(f"size {n}, {kind}: {out.stderr[-2000:]}")
            rows.append(json.loads(out.stdout.splitlines()[-1]))
            print(f"  {n:,} {kind}: {rows[-1]['factory']} recall@10 {rows[-1]['recall_at_10']:.3f}", flush=True)
    data = (f"real {rows[0]['dim']}-d windows of {args.real} (means of 9 shots)" if args.real else
            f"clustered synthetic {DIM}-d embeddings ({CLUSTERS} clusters)")
    print(f"{data}, cosine, `m2s index --index {' / '.join(args.kinds)}` (auto: flat up to {args.flat_max:,}); "
          f"{rows[0]['queries']} held-back queries, k = 10")
    print("| windows | index | build s | index MB | ÷ flat | peak RSS MB | p50 ms | p99 ms | recall@10 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['factory']} | {r['build_s']:.1f} | {r['index_mb']:.0f} | {r['index_mb'] / r['flat_mb']:.3f} "
              f"| {r['peak_rss_mb']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['recall_at_10']:.3f} |")
    if len(args.sizes) > 1 and len(args.kinds) == 1:
        a, b = rows[0], rows[-1]
        exp = math.log(b["build_s"] / a["build_s"]) / math.log(b["n"] / a["n"])
        print(f"build time growth exponent {a['n']:,} → {b['n']:,}: {exp:.2f} (≤ 1: linear or better)")
    return 0 if all(r["recall_at_10"] > 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
