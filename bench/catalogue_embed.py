"""`m2s embed --catalogue` on Ray with 2 workers against one local process (issue 43's target: Ray's
rate per core ≥ 0.9 × the single process's — the encoder loaded once per worker, not per movie).

    python bench/catalogue_embed.py [--movies 24] [--keep DIR]
    python bench/catalogue_embed.py --smoke     # 10 tiny movies; the figures mean nothing
    python bench/catalogue_embed.py --export RUN/export --catalogue CAT   # an existing export (make test)

Builds a demo world and a tiny run up to its export (the reliability bench's tiny models), then embeds
the world's catalogue, each way in a fresh folder with one BLAS thread per process: locally in one
process, on a local Ray cluster with 2 workers, as two concurrent `--shard i/2` processes (the same
two cores without Ray), and Ray's start-up alone (ray.init + shutdown).
Prints each wall time, movies per second per core, and the ratio Ray ÷ local per core, with and
without Ray's start-up. Items here are CPU work: on a machine with 2 cores the Ray run has exactly
one core per worker, so the per-core ratio is what the cores allow (run it on an idle machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from reliability import STAGES, TINY, TINY_WORLD  # noqa: E402  (bench/ is the script's own folder)

CLI = [sys.executable, "-m", "movies2scenes.cli"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def m2s(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([*CLI, *args], cwd=ROOT, check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def build(work: Path, movies: int, smoke: bool) -> tuple[Path, Path]:
    """(catalogue, export) of a demo world and a tiny run through export."""
    world, run = work / "world", work / "run"
    size = TINY_WORLD if smoke else [f"demo_world.num_movies={movies}"]  # smoke: the reliability bench's 10 movies
    if not (world / "catalogue.csv").is_file():
        m2s("demo-world", str(world), "-c", "configs/cpu-tiny.yaml", *size)
    common = ["-c", "configs/cpu-tiny.yaml", f"catalogue={world / 'catalogue.csv'}",
              f"watch_logs={world / 'watch_logs.csv'}", f"run_dir={run}", *TINY]
    for cmd, folder in STAGES:
        if folder in ("evaluation",) or cmd == "evaluate":
            continue
        m2s(cmd, *common)
        if cmd == "export":
            break
    return world / "catalogue.csv", run / "export"


def ray_startup() -> float:
    code = ("import ray, time; t = time.perf_counter(); ray.init(num_cpus=2, include_dashboard=False, "
            "log_to_driver=False); ray.shutdown(); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movies", type=int, default=24)
    ap.add_argument("--keep", type=Path, help="keep the world and run here (reused when present)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--export", type=Path, help="an existing export to embed with (with --catalogue; no run is built)")
    ap.add_argument("--catalogue", type=Path, help="the catalogue to embed (with --export)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="m2s-catalogue-embed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        catalogue, export = ((args.catalogue, args.export) if args.export and args.catalogue
                             else build(work, args.movies, args.smoke))
        n = sum(1 for _ in open(catalogue)) - 1
        runs = {}
        for name, extra, cores in (("local, 1 process", [], 1), ("Ray, 2 workers", ["--executor", "ray",
                                                                                     "executor.workers=2"], 2)):
            out = work / f"emb-{cores}"
            shutil.rmtree(out, ignore_errors=True)
            runs[name] = (m2s("embed", "--catalogue", str(catalogue), "--encoder", str(export), "--out", str(out),
                              *extra), cores)
        out = work / "emb-shards"  # the same 2 cores without Ray: two --shard processes at once
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        procs = [subprocess.Popen([*CLI, "embed", "--catalogue", str(catalogue), "--encoder", str(export), "--out",
                                   str(out), "--shard", f"{i}/2"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
                 for i in range(2)]
        if any(p.wait() for p in procs):
            raise SystemExit("a --shard process failed")
        m2s("embed", "--catalogue", str(catalogue), "--encoder", str(export), "--out", str(out))  # the merge
        runs["local, 2 --shard processes"] = (time.perf_counter() - t, 2)
        start = ray_startup()
        print(f"m2s embed --catalogue: {n} movies of the demo world, tiny export, one BLAS thread per process")
        print("| executor | wall s | movies / s / core |")
        print("|---|---:|---:|")
        rate = {k: n / s / c for k, (s, c) in runs.items()}
        for k, (s, c) in runs.items():
            print(f"| {k} | {s:.1f} | {rate[k]:.3f} |")
        (local_s, _), (ray_s, _) = runs["local, 1 process"], runs["Ray, 2 workers"]
        print(f"Ray's start-up alone (ray.init + shutdown, 2 CPUs): {start:.1f} s")
        print(f"Ray ÷ local per core: {rate['Ray, 2 workers'] / rate['local, 1 process']:.2f} "
              f"({local_s / (2 * max(ray_s - start, 1e-9)):.2f} without Ray's start-up; target ≥ 0.9)")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
