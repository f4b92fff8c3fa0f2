"""detect-shots on a skewed catalogue — one long film and many short ones — with two workers:
local processes splitting the movies round-robin (``--shard i/2``) against the Ray executor (2 worker
actors, longest first), side by side in one run; and a Ray run in which one busy worker is killed.

    python bench/executors.py [--long 48000] [--short 24] [--short-frames 3000] [--width 320] [--keep DIR]
    python bench/executors.py --smoke   # 3 tiny films, no kill run (make test); the figures mean nothing
    python bench/executors.py --schedule [--ideal 20] [--titles 10000]   # the schedule alone (bench/schedule.py)

Prints per executor the makespan (wall time of the stage, start-up and merge included), its ratio to
the ideal (the single-process run's wall time ÷ 2 workers), Ray's own start-up
(ray.init + shutdown of a local cluster), and for the SIGKILL run whether every movie is present
and the artefacts equal the undisturbed run's. Targets (issue 28): Ray ≤ 1.15 × the ideal and below
round-robin; the killed run identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from testkit.ray_faults import kill_a_busy_worker
from testkit.videos import write_catalogue

ROOT = Path(__file__).resolve().parents[1]
M2S = [sys.executable, "-m", "movies2scenes.cli"]


def film(path: Path, frames: int, seed: int, size: tuple[int, int], shot: int = 50) -> Path:
    """A film of a moving random block texture with a hard cut every ``shot`` frames (h264),
    written frame by frame (a feature-length film does not fit in memory)."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        stream = c.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            if i % shot == 0:  # smooth blocks, twice the frame's width: the picture pans across it
                texture = np.repeat(np.repeat(rng.integers(0, 255, (h // 16 + 1, w // 8 + 1, 3), np.uint8), 16, 0), 16, 1)
            x = (i % shot) * w // (2 * shot)
            frame = np.ascontiguousarray(texture[:h, x:x + w])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def catalogue(folder: Path, long: int, short: int, short_frames: int, size: tuple[int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"movie_id": "m000-long", "video": str(film(folder / "long.mp4", long, 0, size))}]
    rows += [{"movie_id": f"m{i:03d}", "video": str(film(folder / f"short{i}.mp4", short_frames, i, size))}
             for i in range(1, short + 1)]
    return write_catalogue(folder / "catalogue.csv", rows)


def stage(run: Path, cat: Path, *extra: str) -> list[str]:
    return [*M2S, "detect-shots", "-c", "configs/cpu-tiny.yaml", f"run_dir={run}", f"catalogue={cat}",
            "shots.decode_threads=1", *extra]


def timed(commands: list[list[str]], env: dict) -> float:
    """Wall time until every command (started together) has finished."""
    t = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    for p, c in zip(procs, commands):
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{' '.join(c)} failed:\n{err[-3000:]}")
    return time.perf_counter() - t


def digest(shots: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(shots.glob("*")) if p.suffix in (".tar", ".parquet", ".jsonl")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", type=int, default=48000, help="frames of the long film (32 min at 25 fps)")
    ap.add_argument("--short", type=int, default=24, help="number of short films")
    ap.add_argument("--short-frames", type=int, default=3000)
    ap.add_argument("--width", type=int, default=320, help="frame width (16:9)")
    ap.add_argument("--keep", type=Path, help="work here instead of a temporary folder")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds, not minutes: 3 tiny films, no separate Ray start-up timing, no kill run")
    ap.add_argument("--schedule", action="store_true",
                    help="the executors' schedule on sleeping items, 8 workers (bench/schedule.py); with --smoke: small")
    ap.add_argument("--ideal", type=float, default=20.0, help="--schedule: the ideal makespan in seconds")
    ap.add_argument("--titles", type=int, default=10_000, help="--schedule: titles of the long-tail catalogue")
    args = ap.parse_args()
    if args.schedule:
        from schedule import run_schedule

        if args.smoke:
            args.ideal, args.titles = 2.0, 200
        return 0 if run_schedule(args.ideal, args.titles, kill=not args.smoke) else 1
    if args.smoke:
        args.long, args.short, args.short_frames, args.width = 300, 2, 100, 96
    work = args.keep or Path(tempfile.mkdtemp(prefix="m2s-executors-"))
    shutil.rmtree(work, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        cat = catalogue(work / "films", args.long, args.short, args.short_frames, (args.width, args.width * 9 // 16))
        frames = args.long + args.short * args.short_frames
        print(f"skewed catalogue ({args.width} px wide): 1 film of {args.long} frames + {args.short} of {args.short_frames} "
              f"({args.long / frames:.0%} of {frames} frames in one film); 2 workers on {os.cpu_count()} CPUs")
        single = timed([stage(work / "single", cat)], env)
        ideal = single / 2  # the single worker's whole time, start-up included, shared by two
        # each movie's time in the single run → the makespan each schedule gives, CPU contention aside
        parts = [json.loads(p.read_text()) for p in (work / "single" / "shots" / "parts").glob("*.json")]
        took = {part["movie_id"]: part["elapsed_s"] for part in parts}
        order = sorted(took)  # the stage's order (by id): round-robin gives movie i to worker i % 2
        rr_model = max(sum(took[m] for m in order[w::2]) for w in range(2))
        loads = [0.0, 0.0]
        for m in sorted(order, key=lambda m: -took[m]):  # longest first, to the first free worker
            loads[loads.index(min(loads))] += took[m]
        lpt_model, work_total = max(loads), sum(took.values())
        rr = timed([stage(work / "rr", cat, "--shard", f"{i}/2") for i in range(2)], env)
        rr += timed([stage(work / "rr", cat)], env)  # the merge, when no shard did it
        startup = None if args.smoke else timed([[sys.executable, "-c", "import ray; ray.init(num_cpus=2, "
                                                 "include_dashboard=False); ray.shutdown()"]], env)
        ray_run = timed([stage(work / "ray", cat, "--executor", "ray", "executor.workers=2")], env)
        killed: list[int] = []
        ray_killed = same_killed = movies = None  # --smoke: no kill run (a worker must be caught busy;
        if not args.smoke:                        # tests/test_ray_executor.py kills workers)
            killer = threading.Thread(target=kill_a_busy_worker, args=(work / "killed" / "shots" / "parts", killed, 2))
            killer.start()
            ray_killed = timed([stage(work / "killed", cat, "--executor", "ray", "executor.workers=2")], env)
            killer.join()
            same_killed = digest(work / "killed" / "shots") == digest(work / "single" / "shots")
            movies = json.loads((work / "killed" / "shots" / "DONE.json").read_text())["counts"]["ok"]
        same = digest(work / "ray" / "shots") == digest(work / "single" / "shots") == digest(work / "rr" / "shots")
        print(f"\n| executor | makespan (s) | ÷ ideal ({ideal:.1f} s) |\n|---|---:|---:|")
        print(f"| 1 process | {single:.1f} | {single / ideal:.2f} |")
        print(f"| 2 processes, round-robin (--shard i/2) | {rr:.1f} | {rr / ideal:.2f} |")
        print(f"| Ray, 2 workers, longest first | {ray_run:.1f} | {ray_run / ideal:.2f} |")
        if ray_killed is not None:
            print(f"| Ray, one busy worker SIGKILLed | {ray_killed:.1f} | {ray_killed / ideal:.2f} |")
        print(f"\nschedules of the measured per-movie times ({work_total:.1f} s in all; ideal {work_total / 2:.1f} s): "
              f"round-robin {rr_model:.1f} s ({rr_model / (work_total / 2):.2f} × ideal), longest first "
              f"{lpt_model:.1f} s ({lpt_model / (work_total / 2):.2f} × ideal)")
        print(f"measured ÷ modelled: round-robin {rr / rr_model:.2f}, Ray {ray_run / lpt_model:.2f} (above 1: two "
              "workers at once run slower than one alone, plus start-up)")
        if not args.smoke:
            print(f"Ray start-up + shutdown of a local 2-CPU cluster: {startup:.1f} s "
                  f"(Ray's makespan without it: {(ray_run - startup) / ideal:.2f} × ideal)")
        print(f"artefacts: Ray = round-robin = 1 process: {same}; killed run: " + (
            "skipped (--smoke)" if args.smoke else f"worker killed {'yes' if killed else 'NO (none was busy)'}, "
            f"{movies}/{1 + args.short} movies, identical: {same_killed}"))
        return 0 if same and (args.smoke or (same_killed and killed)) else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
