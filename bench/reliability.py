"""Reliability: kill every stage with SIGKILL at a random moment, rerun it, and check that its
artefacts equal those of an uninterrupted run (issue 7).

Two run directories over the same demo world: A runs every stage straight through (timing each);
B runs each stage, kills it after a seeded random fraction (20–90 %) of A's time for that stage,
then reruns it until it succeeds, and moves on. Then every artefact file of every stage is compared
byte for byte (logs, checkpoints, parts, DONE.json and other run bookkeeping excluded; model
weights are compared as files too, so resume must be exact).

    python bench/reliability.py [--tiny] [--seed 0] [--out bench/_work/reliability]

``--tiny`` uses a 10-movie world and tiny models (a few minutes on 2 cores); the test suite runs
it (tests/test_reliability.py). Without it: the demo configuration (~15 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.layout import STAGES as LAYOUT_STAGES  # noqa: E402

STAGES = [(s.command, s.folder) for s in LAYOUT_STAGES]  # (command, run-dir folder), pipeline order
VOLATILE = {"DONE.json", "logs", "checkpoints", "parts", "metrics.json"}  # timings, paths, events
TINY_WORLD = ["num_movies=10", "num_genres=2", "scenes_per_movie=[3, 4]", "shots_per_scene=[3, 6]", "shot_frames=[8, 14]",
              "num_users=40", "watches_per_user=[2, 5]"]
TINY = [
    "shot_encoder.model.img_size=32", "shot_encoder.model.patch_size=8", "shot_encoder.model.embed_dim=48",
    "shot_encoder.model.depth=2", "shot_encoder.model.num_heads=3", "shot_encoder.moco.dim=16",
    "shot_encoder.moco.mlp_hidden=32", "shot_encoder.moco.queue_size=64", "shot_encoder.train.batch_size=8",
    "shot_encoder.train.max_steps=12", "shot_encoder.train.checkpoint_every=3", "shot_encoder.train.num_workers=0",
    "shot_features.num_workers=0", "movie_pairs.per_movie=1", "movie_encoder.max_shots=32",
    "movie_encoder.pool_kernel=4", "movie_encoder.pool_stride=2", "movie_encoder.train.batch_size=2",
    "movie_encoder.train.max_steps=8", "movie_encoder.train.checkpoint_every=2", "movie_encoder.heldout_fraction=0.3",
    "scene_pairs.shots_per_scene=3", "scene_pairs.movie_pairs_per_shard=1",
    "scene_encoder.model.depth=2", "scene_encoder.moco.queue_size=32", "scene_encoder.train.batch_size=4",
    "scene_encoder.train.max_steps=8", "scene_encoder.train.checkpoint_every=2", "scene_encoder.train.num_workers=0",
    "evaluate.epochs=5", "evaluate.hidden=[16, 8]", "evaluate.allow_leakage=true",
]


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "movies2scenes.cli", *args]


def artefacts(folder: Path) -> dict[str, str]:
    """relative path → sha256 of every artefact file under a stage folder. Temporary files are
    listed as ``LEFTOVER`` (a finished rerun must not leave any); the stage lock files are not
    artefacts (they name the last holder's pid)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.name.startswith(".tmp-"):
            out[str(rel)] = "LEFTOVER"
        elif p.is_file() and not (set(rel.parts) & VOLATILE) and not p.name.startswith(".lock"):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "_work" / "reliability")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    world = args.out / "world"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    subprocess.run(cli(["demo-world", str(world), "-c", "configs/cpu-tiny.yaml", *(TINY_WORLD if args.tiny else [])]),
                   cwd=ROOT, check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(cli(["demo-tasks", str(world), "--out", str(world / "tasks")]), cwd=ROOT, check=True,
                   env=env, stdout=subprocess.DEVNULL)
    common = ["-c", "configs/cpu-tiny.yaml", f"catalogue={world / 'catalogue.csv'}",
              f"watch_logs={world / 'watch_logs.csv'}",
              f"evaluate.tasks=[{world / 'tasks' / 'place.csv'}, {world / 'tasks' / 'genre.csv'}, "
              f"{world / 'tasks' / 'boundary.csv'}]",
              *(TINY if args.tiny else [])]
    runs = {"straight": args.out / "straight", "killed": args.out / "killed"}
    durations, reference = {}, {}
    for cmd, folder in STAGES:
        t = time.perf_counter()
        r = subprocess.run(cli([cmd, *common, f"run_dir={runs['straight']}"]), cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-3000:])
            raise SystemExit(f"{cmd} failed in the uninterrupted run")
        durations[cmd] = time.perf_counter() - t
        # each folder as its stage left it: evaluate later adds its results to export's model card
        reference[folder] = artefacts(runs["straight"] / folder)
    results = []
    for cmd, folder in STAGES:
        frac = rng.uniform(0.2, 0.9)
        proc = subprocess.Popen(cli([cmd, *common, f"run_dir={runs['killed']}"]), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(frac * durations[cmd])
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        r = subprocess.run(cli([cmd, *common, f"run_dir={runs['killed']}"]), cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-3000:])
        a, b = reference[folder], artefacts(runs["killed"] / folder)
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        results.append((cmd, killed, frac * durations[cmd], durations[cmd], r.returncode, len(a), differ))
    print(f"{'stage':<24} {'killed at':>10} {'of':>8} {'rerun':>6} {'files':>6}  identical")
    ok = True
    for cmd, killed, at, total, rc, n, differ in results:
        same = rc == 0 and not differ and n > 0
        ok &= same
        print(f"{cmd:<24} {at:9.1f}s {total:7.1f}s {rc:>6} {n:>6}  {'yes' if same else 'NO: ' + ', '.join(differ[:5])}"
              + ("" if killed else "  (finished before the kill)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
