"""Artefact digests of a whole run, for refactors that must not change a byte (issue 27).

Writes a world (``--world tiny``: the reliability bench's 10-movie world and tiny models;
``--world demo``: configs/cpu-tiny.yaml as `make demo` runs it), runs every stage once in a fresh run
directory, and records the sha256 of every artefact file of every stage (the reliability bench's
rule: logs, checkpoints, parts and metrics.json hold timings and paths and are left out); each
DONE.json is digested without its timings and input hash (it hashes paths) and with the work folder's path replaced
(``DONE.json (normalised)``). ``--processes 2`` runs the data-parallel stages as two concurrent ``--shard i/2`` processes
(the last one merges) and the training stages under ``torchrun --nproc_per_node 2`` (gloo).

    python bench/artefact_digests.py --world tiny --processes 1 --out before.json
    python bench/artefact_digests.py --world tiny --processes 1 --out after.json --compare before.json

``--diff A B`` compares two digest files without running anything. ``--smoke``: the tiny world's
first two stages (make test). ``--compare`` prints every file that differs (or exists on one side only) and exits 1 if any does.
Run both sides with the same ``--keep`` folder: evaluate's config hash holds the task files' paths.
Run it from the checkout whose code is to be digested (it runs ``python -m movies2scenes.cli`` there,
or ``pipelines.cli`` in a checkout from before the package move),
with the same ``OMP_NUM_THREADS`` on both sides: float sums, hence weights, depend on the thread
count (1 vs 2 threads changed 28 of the tiny world's 88 files). A leftover ``.tmp-*`` file is
listed as ``LEFTOVER``.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from reliability import STAGES, TINY, TINY_WORLD, artefacts  # noqa: E402

PER_ITEM = {"detect-shots", "extract-shot-features", "mine-scene-pairs"}  # --shard i/n stages
TRAINING = {"train-shot-encoder", "train-movie-encoder", "train-scene-encoder"}
CLI = "pipelines.cli" if (ROOT / "pipelines" / "cli.py").is_file() else "movies2scenes.cli"
TIMINGS = {"elapsed_s", "finished_at", "decode_seconds"}


def done_digest(folder: Path, work: Path) -> dict[str, str]:
    """The stage's DONE.json without its timings, the work folder's path replaced."""
    path = folder / "DONE.json"
    if not path.is_file():
        return {}
    # input_hash hashes the input folders' paths too: equal runs in different work folders differ there,
    # and what it stands for (the inputs' content) is digested file by file anyway
    record = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMINGS | {"input_hash"}}
    text = json.dumps(record, sort_keys=True).replace(str(work), "<work>")
    return {"DONE.json (normalised)": hashlib.sha256(text.encode()).hexdigest()}


def run_stage(cmd: str, args: list[str], processes: int, env: dict) -> None:
    base = [sys.executable, "-m", CLI, cmd, *args]
    if processes == 1 or cmd not in PER_ITEM | TRAINING:
        procs = [subprocess.Popen(base, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    elif cmd in PER_ITEM:
        procs = [subprocess.Popen([*base, "--shard", f"{i}/{processes}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for i in range(processes)]
    else:
        port = str(29500 + os.getpid() % 1000)
        procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                                   "--master_port", port, "-m", CLI, cmd, *args], cwd=ROOT,
                                  env=dict(env, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)]
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            print(out[-4000:])
            raise SystemExit(f"{cmd} failed (exit {p.returncode})")
    if cmd in PER_ITEM and processes > 1:  # a rerun after all shards: the merge, if no shard did it
        r = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:])
            raise SystemExit(f"{cmd} (merge) failed (exit {r.returncode})")


def digests(world_kind: str, processes: int, work: Path, stages: int | None = None) -> dict[str, dict[str, str]]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    world, run = work / "world", work / "run"
    subprocess.run([sys.executable, "-m", CLI, "demo-world", str(world), "-c", "configs/cpu-tiny.yaml",
                    *(TINY_WORLD if world_kind == "tiny" else [])], cwd=ROOT, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", CLI, "demo-tasks", str(world), "--out", str(world / "tasks")],
                   cwd=ROOT, check=True, env=env, stdout=subprocess.DEVNULL)
    common = ["-c", "configs/cpu-tiny.yaml", f"catalogue={world / 'catalogue.csv'}", f"watch_logs={world / 'watch_logs.csv'}",
              f"evaluate.tasks=[{world / 'tasks' / 'place.csv'}, {world / 'tasks' / 'genre.csv'}, "
              f"{world / 'tasks' / 'boundary.csv'}]", f"run_dir={run}",
              *(TINY if world_kind == "tiny" else ["evaluate.allow_leakage=false"])]
    out = {"world": artefacts(world)}
    for cmd, folder in STAGES[:stages]:
        print(f"artefact digests: {cmd} ({processes} process{'es' if processes > 1 else ''})", flush=True)
        run_stage(cmd, common, processes, env)
        out[folder] = artefacts(run / folder) | done_digest(run / folder, work)
    return out


def compare(a: dict, b: dict) -> list[str]:
    differ = []
    for stage in sorted(a.keys() | b.keys()):
        fa, fb = a.get(stage, {}), b.get(stage, {})
        differ += [f"{stage}/{f}" for f in sorted(fa.keys() | fb.keys()) if fa.get(f) != fb.get(f)]
    return differ


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=["tiny", "demo"], default="tiny")
    ap.add_argument("--processes", type=int, choices=[1, 2], default=1)
    ap.add_argument("--out", type=Path, help="the digests (JSON)")
    ap.add_argument("--compare", type=Path, help="digests of the other side: print what differs")
    ap.add_argument("--keep", type=Path, help="keep the run here instead of a temporary folder")
    ap.add_argument("--stages", type=int, help="only the first N stages (--smoke: the tiny world, 2 stages)")
    ap.add_argument("--smoke", action="store_true", help="seconds: the tiny world's first two stages")
    ap.add_argument("--diff", type=Path, nargs=2, metavar=("A", "B"), help="only compare two digest files (no run)")
    args = ap.parse_args()
    if args.diff:
        return report(*(json.loads(p.read_text()) for p in args.diff), args.diff[0])
    if not args.out:
        ap.error("--out is required (or --diff A B)")
    if args.smoke:
        args.world, args.stages = "tiny", args.stages or 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="m2s-digests-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        got = digests(args.world, args.processes, work, args.stages)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(got, indent=1, sort_keys=True))
    files = sum(len(v) for v in got.values())
    print(f"artefact digests: {files} files in {len(got)} folders → {args.out}")
    return report(json.loads(args.compare.read_text()), got, args.compare) if args.compare else 0


def report(a: dict, b: dict, name: Path) -> int:
    """Print what differs between two digest sets; 1 if anything does."""
    differ = compare(a, b)
    print(f"compared with {name}: " + ("identical" if not differ else f"{len(differ)} differ"))
    for f in differ[:50]:
        print("  ", f)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
