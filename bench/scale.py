"""Real sizes (issue 15). Built so far: the watch-log part; the feature-length-film and the
feature-level catalogue parts are NOT built yet (they raise).

    python bench/scale.py watchlogs [--sizes 1e5 1e6 1e7] [--movies 10000] [--json OUT]

watchlogs: synthetic watch logs (users and movies Zipf-like: a few blockbusters, a long tail;
timestamps increasing per user) as Parquet and CSV, then co-watch pairs in a fresh child process
each — the out-of-core DuckDB path (`cowatch.cowatch_pairs_from_file`, what build-movie-pairs runs)
and, up to --reference-max events, the in-memory reference (`similarity.cowatch_pairs` after
reading the CSV into lists, what the stage did before). Reports wall time, the child's peak RSS and
the growth exponents of both over the sizes (time ∝ N^a, peak RSS ∝ N^b).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_logs(folder: Path, n: int, movies: int, seed: int = 0) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = max(10, n // 20)
    u = (rng.zipf(1.3, n) - 1) % users
    m = (rng.zipf(1.2, n) - 1) % movies
    t = rng.integers(1_500_000_000, 1_700_000_000, n)
    table = pa.table({"user_id": pa.array(np.char.add("u", u.astype(str))),
                      "movie_id": pa.array(np.char.add("m", m.astype(str))),
                      "timestamp": pa.array(t, pa.int64())})
    pq_path, csv_path = folder / f"logs-{n}.parquet", folder / f"logs-{n}.csv"
    pq.write_table(table, pq_path)
    pcsv.write_csv(table, csv_path)
    return pq_path, csv_path


CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
kind, path, movies, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
known = {{f"m{{i}}" for i in range(movies)}}
t = time.perf_counter()
if kind == "duckdb":
    from movies2scenes.cowatch import cowatch_pairs_from_file
    pairs = cowatch_pairs_from_file(path, known, known, per_movie=3, memory_limit="2GB", temp_dir=tmp)
else:
    from movies2scenes.catalogue import load_watch_logs
    from movies2scenes.similarity import cowatch_pairs
    logs = load_watch_logs(path, known)
    pairs = cowatch_pairs(logs.user_id, logs.movie_id, logs.timestamp, known, per_movie=3)
print(json.dumps({{"seconds": time.perf_counter() - t, "pairs": len(pairs)}}))
"""


def run_child(kind: str, path: Path, movies: int, tmp: Path) -> dict:
    """Run one measurement in a fresh interpreter; its own peak RSS from wait4 (not the running
    maximum over all children that RUSAGE_CHILDREN gives)."""
    import os

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT)), kind, str(path), str(movies),
                                 str(tmp)], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode:
            raise RuntimeError(err.read()[-2000:])
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    res = json.loads(lines[-1])
    res["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return res


def run_command(argv: list[str], log: Path | None = None) -> dict:
    """Run ``argv`` (a stage CLI) in a fresh process: wall seconds and its own peak RSS (wait4)."""
    import os

    with (open(log, "w") if log else tempfile.TemporaryFile("w+")) as out:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f"{' '.join(argv[:4])} … exited {code}" + (f"; see {log}" if log else ""))
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def m2s(stage: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", stage, "-c", "configs/demo.yaml", *overrides]


def tree_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def film(args) -> dict:
    """One long demo movie per length through detect-shots, train-shot-encoder (a few steps: the
    encoder the features need) and extract-shot-features, each stage in its own process."""
    import csv

    from movies2scenes.config import DemoWorldConfig
    from movies2scenes.demo import make_world

    rows = []
    base = Path(args.workdir or tempfile.mkdtemp(prefix="m2s-film-"))
    print(f"feature-length film: demo generator, 160×96 px, shots of 60–90 frames at 12 fps; work in {base}")
    print("| shots (truth) | frames | stage | seconds | frames/s or shots/s | peak RSS (MB) | bytes written |")
    print("|---|---|---|---|---|---|---|")
    for target in args.film_shots:
        world = base / f"world-{target}"
        cfg = DemoWorldConfig(num_movies=1, num_genres=2, scenes_per_movie=[round(target / 7.5)] * 2,
                              shots_per_scene=[3, 12], shot_frames=[60, 90], num_users=10,
                              watches_per_user=[1, 1], val_fraction=0, test_fraction=0)
        t = time.perf_counter()
        make_world(world, cfg, seed=0, progress=False)
        gen = time.perf_counter() - t
        truth = list(csv.DictReader(open(world / "ground_truth" / "shots.csv")))
        frames = int(truth[-1]["end_frame"])
        run = base / f"run-{target}"
        shutil.rmtree(run, ignore_errors=True)  # measure a full run, never a resumed one
        common = [f"run_dir={run}", f"catalogue={world / 'catalogue.csv'}", "shot_encoder.train.max_steps=2", "shot_encoder.train.batch_size=16",
                  "shot_encoder.train.num_workers=0", "shot_features.num_workers=1",
                  f"shots.decoder={args.decoder}"]
        video_mb = (world / "videos" / "m0000.mp4").stat().st_size
        row = {"target_shots": target, "true_shots": len(truth), "frames": frames, "generate_s": gen,
               "video_bytes": video_mb}
        for stage, folder in (("detect-shots", "shots"), ("train-shot-encoder", "shot_encoder"),
                              ("extract-shot-features", "shot_features")):
            res = run_command(m2s(stage, *common), log=base / f"{stage}-{target}.log")
            written = tree_bytes(run / folder)
            if stage == "detect-shots":
                import pyarrow.parquet as pq

                starts = set(pq.read_table(run / "shots" / "index.parquet").column("start_frame").to_pylist())
                found = len(starts)
                cuts = {int(t["start_frame"]) for t in truth} - {0}
                hit = sum(any(c + d in starts for d in (-1, 0, 1)) for c in cuts)
                rate, unit = frames / res["seconds"], "frames/s"
                part = next((run / "shots" / "parts").glob("*.json"))
                row["decoder"] = json.loads(part.read_text())["decoder"]
                row.update(found_shots=found, cut_recall=hit / len(cuts),
                           cut_precision=hit / max(1, len(starts - {0})))
            else:
                rate, unit = found / res["seconds"], "shots/s"
            row[stage] = {**res, "bytes": written, "rate": rate, "unit": unit}
            print(f"| {len(truth):,} (found {found:,}) | {frames:,} | {stage} | {res['seconds']:.1f} | "
                  f"{rate:,.0f} {unit} | {res['peak_rss_mb']:.0f} | {written / 2**20:.2f} MB |", flush=True)
        print(f"|  | cuts: recall {row['cut_recall']:.3f}, precision {row['cut_precision']:.3f} (±1 frame) | "
              f"video {video_mb / 2**20:.0f} MB, generated in {gen:.0f} s, decoder {row['decoder']} |  |  |  |  |", flush=True)
        rows.append(row)
    if len(rows) >= 2:
        print("\n| stage | time exponent vs frames | peak-RSS exponent vs frames | RSS ratio longest/shortest |")
        print("|---|---|---|---|")
        for stage in ("detect-shots", "train-shot-encoder", "extract-shot-features"):
            xs = [r["frames"] for r in rows]
            print(f"| {stage} | {exponent(xs, [r[stage]['seconds'] for r in rows]):.2f} | "
                  f"{exponent(xs, [r[stage]['peak_rss_mb'] for r in rows]):.2f} | "
                  f"{rows[-1][stage]['peak_rss_mb'] / rows[0][stage]['peak_rss_mb']:.2f} |")
    return {"film": rows}


def exponent(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def watchlogs(args) -> dict:
    sizes = [int(float(s)) for s in args.sizes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="m2s-scale-") as d:
        folder = Path(d)
        print(f"watch logs: {args.movies} movies, users = events / 20, Zipf-like; per_movie 3, lookahead 1")
        print("| events | file | engine | seconds | peak RSS (MB) | pairs | events/s |")
        print("|---|---|---|---|---|---|---|")
        for n in sizes:
            t = time.perf_counter()
            pq_path, csv_path = write_logs(folder, n, args.movies)
            gen = time.perf_counter() - t
            for kind, path in (("duckdb", pq_path), ("duckdb", csv_path), ("reference", csv_path)):
                if kind == "reference" and n > args.reference_max:
                    continue
                res = run_child(kind, path, args.movies, folder / "spill")
                rows.append({"events": n, "file": path.suffix[1:], "engine": kind, **res, "generate_s": gen,
                             "file_mb": path.stat().st_size / 2**20})
                print(f"| {n:,} | {path.suffix[1:]} ({path.stat().st_size / 2**20:.0f} MB) | {kind} | "
                      f"{res['seconds']:.1f} | {res['peak_rss_mb']:.0f} | {res['pairs']:,} | "
                      f"{n / res['seconds']:,.0f} |", flush=True)
            for p in (pq_path, csv_path):
                p.unlink()
    print("\n| engine | file | time exponent a (t ∝ N^a) | peak-RSS exponent b |")
    print("|---|---|---|---|")
    for kind, file in (("duckdb", "parquet"), ("duckdb", "csv"), ("reference", "csv")):
        sel = [r for r in rows if r["engine"] == kind and r["file"] == file]
        if len(sel) >= 2:
            print(f"| {kind} | {file} | {exponent([r['events'] for r in sel], [r['seconds'] for r in sel]):.2f} | "
                  f"{exponent([r['events'] for r in sel], [r['peak_rss_mb'] for r in sel]):.2f} |")
    return {"watchlogs": rows}


def not_built(args) -> dict:
    raise SystemExit(f"bench/scale.py {args.part}: not built yet (issue 15 is in progress; see the issue's closing note)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["watchlogs", "film", "catalogue"])
    ap.add_argument("--sizes", nargs="*", default=["1e5", "1e6", "1e7"])
    ap.add_argument("--movies", type=int, default=10_000)
    ap.add_argument("--reference-max", type=float, default=1e7, help="largest size for the in-memory reference")
    ap.add_argument("--film-shots", nargs="*", type=int, default=[500, 2000], help="film: movie lengths in shots")
    ap.add_argument("--decoder", default="auto", help="film: shots.decoder (auto picks PyAV above 256 MB)")
    ap.add_argument("--workdir", type=Path, help="film/catalogue: keep the generated data here (default: a temp folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {"watchlogs": watchlogs, "film": film, "catalogue": not_built}[args.part](args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
