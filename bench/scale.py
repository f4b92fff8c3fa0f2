"""Real sizes (issue 15): three parts, each a table on stdout (+ --json), each stage measured in a
fresh process (wall time, its own peak RSS from wait4).

    python bench/scale.py watchlogs [--sizes 1e5 1e6 1e7] [--movies 10000] [--memory-limit 2GB]
    python bench/scale.py film [--film-shots 500 2000] [--decoder auto|pyav|decord]
    python bench/scale.py catalogue [--titles 1000 4000 16000] [--shots 1000 3000] [--mine-sample 300]
    python bench/scale.py merge [--rows 1e5 1e6 6e6]

watchlogs: synthetic watch logs (users and movies Zipf-like) as Parquet and CSV, then co-watch
pairs — the out-of-core DuckDB path (`cowatch.cowatch_pairs_from_file`, what build-movie-pairs
runs) and, up to --reference-max events, the in-memory reference. Growth exponents over the sizes.
film: one long demo movie per length through detect-shots, train-shot-encoder (2 steps) and
extract-shot-features: frames/s, peak RSS, bytes, cut recall/precision; exponents vs length.
catalogue: synthetic feature-level catalogues (fp16 shot features with scene structure, genres,
synopses, KG triples, watch logs; 1 % of titles without features), then build-movie-pairs (every
source), train-movie-encoder (fixed steps) and the mining compute on a sample of cowatch movie
pairs (projected to all pairs from the per-pair cost; the stage's scene shards need keyframes,
i.e. video). Exponents vs titles. The CI-sized version runs in tests/test_scale.py.
merge: mine-scene-pairs' merge (`merge_parts`) over units of 64 movie pairs × 75 scene pairs, up to
the ≈ 6M rows of a 30k-title catalogue; and, up to --reference-rows, every row loaded as Python
dicts (what the JSON parts did).
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
    """``n`` events as Parquet and CSV, written in chunks of 5·10⁶ (10⁸ events fit in memory nowhere)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = max(10, n // 20)
    pq_path, csv_path = folder / f"logs-{n}.parquet", folder / f"logs-{n}.csv"
    pq_writer = csv_writer = None
    for start in range(0, n, 5_000_000):
        k = min(5_000_000, n - start)
        u = (rng.zipf(1.3, k) - 1) % users
        m = (rng.zipf(1.2, k) - 1) % movies
        t = rng.integers(1_500_000_000, 1_700_000_000, k)
        table = pa.table({"user_id": pa.array(np.char.add("u", u.astype(str))),
                          "movie_id": pa.array(np.char.add("m", m.astype(str))),
                          "timestamp": pa.array(t, pa.int64())})
        if pq_writer is None:
            pq_writer = pq.ParquetWriter(pq_path, table.schema)
            csv_writer = pcsv.CSVWriter(csv_path, table.schema)
        pq_writer.write_table(table)
        csv_writer.write_table(table)
    pq_writer.close()
    csv_writer.close()
    return pq_path, csv_path


CHILD = r"""
import json, sys, time
from pathlib import Path
kind, path, movies, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
known = {{f"m{{i}}" for i in range(movies)}}
t = time.perf_counter()
if kind == "duckdb":
    from movies2scenes.cowatch import cowatch_pairs_from_file
    pairs = cowatch_pairs_from_file(path, known, known, per_movie=3, memory_limit=sys.argv[5], temp_dir=tmp)
else:
    from movies2scenes.catalogue import load_watch_logs
    from testkit.oracles import cowatch_pairs
    logs = load_watch_logs(path, known)
    pairs = cowatch_pairs(logs.user_id, logs.movie_id, logs.timestamp, known, per_movie=3)
print(json.dumps({{"seconds": time.perf_counter() - t, "pairs": len(pairs)}}))
"""


def vm_hwm_mb(pid: int) -> float:
    """The peak RSS of process ``pid``'s current image (VmHWM, MB), 0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_command(argv: list[str], log: Path | None = None, reports: bool = False) -> dict:
    """Run ``argv`` in a fresh process: wall seconds and its own peak RSS. The peak is the child's
    VmHWM, read every 20 ms until it exits: wait4's ru_maxrss is no good here — Linux carries the
    forked copy of *this* process's memory into it at exec (a parent holding 5·10⁶ generated events
    made every child "peak" at 1.16 GB; issue 42). ``reports``: the child's last output line is a
    JSON object, merged in. stdout + stderr go to ``log`` if given."""
    import os

    with (open(log, "w+") if log else tempfile.TemporaryFile("w+")) as out:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        peak = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, vm_hwm_mb(proc.pid))
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t
        out.seek(0)
        text = out.read()
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f"{' '.join(argv[:4])} … exited {code}" + (f"; see {log}" if log else f":\n{text[-2000:]}"))
    return {"seconds": seconds, **(json.loads(text.strip().splitlines()[-1]) if reports else {}),
            "peak_rss_mb": peak, "ru_maxrss_mb": usage.ru_maxrss / 1024}  # the latter holds the parent's copy


def run_child(kind: str, path: Path, movies: int, tmp: Path, memory_limit: str = "2GB") -> dict:
    """One co-watch measurement in a fresh interpreter (its own "seconds" replace the wall time)."""
    return run_command([sys.executable, "-c", CHILD.format(root=str(ROOT)), kind, str(path), str(movies),
                        str(tmp), memory_limit], reports=True)


def m2s(stage: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "movies2scenes.cli", stage, "-c", "configs/cpu-tiny.yaml", *overrides]


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


GENRES = ["drama", "comedy", "thriller", "romance", "action", "horror", "documentary", "crime",
          "animation", "sci-fi", "western", "musical"]


def write_feature_catalogue(folder: Path, titles: int, shots: tuple[int, int] = (1000, 3000), dim: int = 96,
                            events_per_title: int = 1000, missing: float = 0.0, seed: int = 0) -> dict:
    """A catalogue at feature level, without video: ``catalogue.csv`` (genres, synopses, splits),
    ``watch_logs.parquet`` (users and titles Zipf-like, users prefer their favourite genre),
    ``kg.csv`` (director triples) and ``run/shot_features/`` (one fp16 M × dim array per movie with
    scene structure: runs of 3–12 shots around a place prototype, places drawn from the genre).
    ``missing``: share of titles without features (their video "failed"). Movie by movie: memory
    does not grow with the number of titles."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    from movies2scenes.features import write_index, write_movie_features

    rng = np.random.default_rng([seed, titles])
    places = rng.normal(size=(200, dim)).astype(np.float32)
    genre_places = rng.dirichlet(np.full(200, 0.1), size=len(GENRES))
    feat_dir = folder / "run" / "shot_features"
    ids = [f"tt{i:07d}" for i in range(titles)]
    genre_of = [sorted(set(rng.choice(len(GENRES), rng.integers(1, 3)).tolist())) for _ in ids]
    rows, total_shots = [], 0
    with open(folder / "catalogue.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movie_id", "video", "title", "genres", "synopsis", "split"])
        for i, m in enumerate(ids):
            g = genre_of[i]
            split = rng.choice(["train", "val", "test"], p=[0.9, 0.05, 0.05])
            where = rng.choice(200, 2, p=genre_places[g[0]])
            w.writerow([m, f"videos/{m}.mp4", f"Title {i}", "|".join(GENRES[k] for k in g),
                        f"A {' '.join(GENRES[k] for k in g)} story between place {where[0]} and place {where[1]}.",
                        split])
            if rng.random() < missing:
                continue
            n = int(rng.integers(shots[0], shots[1] + 1))
            x = np.empty((n, dim), np.float32)
            s = 0
            while s < n:
                run = int(rng.integers(3, 13))
                x[s:s + run] = places[rng.choice(200, p=genre_places[g[int(rng.integers(len(g)))]])]
                s += run
            x += rng.normal(0, 0.7, x.shape).astype(np.float32)
            rows.append(write_movie_features(feat_dir, m, x))
            total_shots += n
    write_index(feat_dir, rows)
    from movies2scenes.integrity import file_record  # what later stages check (sizes, first-read sha256)

    files = {name: f for r in rows for name, f in r["files"].items()} | {"index.parquet": file_record(feat_dir / "index.parquet")}
    (feat_dir / "DONE.json").write_text(json.dumps({"config_hash": "synthetic", "input_hash": f"{titles}:{seed}",
                                                    "files": files}))
    with open(folder / "kg.csv", "w") as f:
        f.write("head,relation,tail\n")
        for m in ids:
            f.write(f"{m},directed_by,director:{int(rng.zipf(1.5)) % max(1, titles // 5)}\n")
    events = titles * events_per_title
    users = max(10, events // 50)
    favourite = rng.integers(len(GENRES), size=users)
    by_genre = [np.array([i for i, g in enumerate(genre_of) if k in g] or [0]) for k in range(len(GENRES))]
    writer = None
    for start in range(0, events, 2_000_000):
        n = min(2_000_000, events - start)
        u = (rng.zipf(1.3, n) - 1) % users
        pick = (rng.zipf(1.2, n) - 1) % titles
        own = rng.random(n) < 0.5  # half the watches from the user's favourite genre
        for k in range(len(GENRES)):
            sel = own & (favourite[u] == k)
            pool = by_genre[k]
            pick[sel] = pool[(rng.zipf(1.2, int(sel.sum())) - 1) % len(pool)]
        t = rng.integers(1_500_000_000, 1_700_000_000, n)
        table = pa.table({"user_id": pa.array(np.char.add("u", u.astype(str))),
                          "movie_id": pa.array(np.char.add("tt", np.char.zfill(pick.astype(str), 7))),
                          "timestamp": pa.array(t, pa.int64())})
        if writer is None:
            writer = pq.ParquetWriter(folder / "watch_logs.parquet", table.schema)
        writer.write_table(table)
    writer.close()
    return {"titles": titles, "with_features": len(rows), "shots": total_shots, "events": events,
            "feature_bytes": tree_bytes(feat_dir)}


MINE_CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pyarrow.parquet as pq, torch
from movies2scenes.features import ShotFeatures
from movies2scenes.mining import mine_pair
from movies2scenes.artefacts import MovieEmbeddings
run, sample = Path(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
feats = ShotFeatures(run / "shot_features")
pairs = sorted({{(r["movie_a"], r["movie_b"]) for r in pq.read_table(run / "movie_pairs" / "cowatch.parquet").to_pylist()}})
have = set(feats.movie_ids)
pairs = [p for p in pairs if p[0] in have and p[1] in have]
total = len(pairs)
if sample and total > sample:
    keep = np.random.default_rng(0).choice(total, sample, replace=False)
    pairs = [pairs[i] for i in sorted(keep)]
embed = MovieEmbeddings(feats, run / "movie_encoder", torch.device("cpu"))
t = time.perf_counter(); scenes = cells = 0
for a, b in pairs:
    m = mine_pair(embed(a), embed(b), 9, 0.5)
    scenes += len(m.score); cells += feats.num_shots(a) * feats.num_shots(b)
print(json.dumps({{"seconds": time.perf_counter() - t, "movie_pairs": len(pairs), "all_movie_pairs": total,
                  "scene_pairs": scenes, "shot_cells": cells}}))
"""


def catalogue(args) -> dict:
    """build-movie-pairs (every source), train-movie-encoder (fixed steps) and the mining compute
    over the cowatch pairs, on synthetic feature-level catalogues of growing size."""
    base = Path(args.workdir or tempfile.mkdtemp(prefix="m2s-catalogue-"))
    rows = []
    print(f"catalogue at feature level: shots per movie {args.shots[0]}–{args.shots[1]}, 96-d fp16, "
          f"{args.events_per_title} watch events per title, {args.missing:.0%} titles without features; in {base}")
    print("| titles | shots | events | stage | seconds | peak RSS (MB) | disk written | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for titles in args.titles:
        folder = base / f"cat-{titles}"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "run").mkdir(parents=True)
        t = time.perf_counter()
        info = write_feature_catalogue(folder, titles, tuple(args.shots), events_per_title=args.events_per_title,
                                       missing=args.missing)
        info["generate_s"] = time.perf_counter() - t
        run = folder / "run"
        common = [f"run_dir={run}", f"catalogue={folder / 'catalogue.csv'}",
                  f"watch_logs={folder / 'watch_logs.parquet'}",
                  "movie_pairs.sources=[cowatch, genre, synopsis, kg, random]", "movie_pairs.combined=[cowatch, genre]",
                  f"movie_pairs.kg_triples={folder / 'kg.csv'}", "movie_encoder.pairs_source=cowatch",
                  f"movie_encoder.max_shots={args.max_shots}", f"movie_encoder.train.max_steps={args.steps}",
                  "movie_encoder.train.batch_size=32"]
        row = {**info}
        for stage, folder_name in (("build-movie-pairs", "movie_pairs"), ("train-movie-encoder", "movie_encoder")):
            res = run_command(m2s(stage, *common), log=folder / f"{stage}.log")
            res["bytes"] = tree_bytes(run / folder_name)
            row[stage] = res
            note = ""
            if stage == "build-movie-pairs":
                counts = json.loads((run / "movie_pairs" / "DONE.json").read_text())["counts"]
                note = ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "excluded_movies")
            print(f"| {titles:,} | {info['shots']:,} | {info['events']:,} | {stage} | {res['seconds']:.1f} | "
                  f"{res['peak_rss_mb']:.0f} | {res['bytes'] / 2**20:.1f} MB | {note} |", flush=True)
        res = run_command([sys.executable, "-c", MINE_CHILD.format(root=str(ROOT)), str(run), str(args.mine_sample)], reports=True)
        res["per_pair_s"] = res["seconds"] / max(1, res["movie_pairs"])
        res["projected_all_s"] = res["per_pair_s"] * res["all_movie_pairs"]
        row["mining"] = res
        print(f"| {titles:,} | {info['shots']:,} | {info['events']:,} | mining (1 thread) | {res['seconds']:.1f} for "
              f"{res['movie_pairs']:,} of {res['all_movie_pairs']:,} pairs | {res['peak_rss_mb']:.0f} | — | "
              f"{1000 * res['per_pair_s']:.0f} ms/pair, {res['scene_pairs'] / max(1, res['movie_pairs']):.0f} scene "
              f"pairs/pair; all pairs ≈ {res['projected_all_s'] / 60:.1f} min |", flush=True)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if len(rows) >= 2:
        xs = [r["titles"] for r in rows]
        print("\n| stage | time exponent a (t ∝ titles^a) | peak-RSS exponent b | RSS ratio largest/smallest |")
        print("|---|---|---|---|")
        for stage in ("build-movie-pairs", "train-movie-encoder"):
            print(f"| {stage} | {exponent(xs, [r[stage]['seconds'] for r in rows]):.2f} | "
                  f"{exponent(xs, [r[stage]['peak_rss_mb'] for r in rows]):.2f} | "
                  f"{rows[-1][stage]['peak_rss_mb'] / rows[0][stage]['peak_rss_mb']:.2f} |")
        print(f"| mining, all pairs (projected from per-pair cost) | "
              f"{exponent(xs, [r['mining']['projected_all_s'] for r in rows]):.2f} | "
              f"{exponent(xs, [r['mining']['peak_rss_mb'] for r in rows]):.2f} | "
              f"{rows[-1]['mining']['peak_rss_mb'] / rows[0]['mining']['peak_rss_mb']:.2f} |")
        print(f"| mining, cost per movie pair | {exponent(xs, [r['mining']['per_pair_s'] for r in rows]):.2f} | | |")
    return {"catalogue": rows}


def exponent(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def watchlogs(args) -> dict:
    sizes = [int(float(s)) for s in args.sizes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="m2s-scale-") as d:
        folder = Path(d)
        print(f"watch logs: {args.movies} movies, users = events / 20, Zipf-like; per_movie 3, lookahead 1; "
              f"DuckDB memory_limit {', '.join(args.memory_limit)} (side by side)")
        print("| events | file | engine | DuckDB memory_limit | seconds | peak RSS (MB) | pairs | events/s |")
        print("|---|---|---|---|---|---|---|---|")
        for n in sizes:
            t = time.perf_counter()
            pq_path, csv_path = write_logs(folder, n, args.movies)
            gen = time.perf_counter() - t
            runs = [("duckdb", pq_path, m) for m in args.memory_limit] + [("duckdb", csv_path, m) for m in args.memory_limit]
            runs += [("reference", csv_path, "—")] if n <= args.reference_max else []
            for kind, path, limit in runs:
                res = run_child(kind, path, args.movies, folder / "spill", limit if kind == "duckdb" else "2GB")
                rows.append({"events": n, "file": path.suffix[1:], "engine": kind, "memory_limit": limit, **res,
                             "generate_s": gen, "file_mb": path.stat().st_size / 2**20})
                print(f"| {n:,} | {path.suffix[1:]} ({path.stat().st_size / 2**20:.0f} MB) | {kind} | {limit} | "
                      f"{res['seconds']:.1f} | {res['peak_rss_mb']:.0f} | {res['pairs']:,} | "
                      f"{n / res['seconds']:,.0f} |", flush=True)
            for p in (pq_path, csv_path):
                p.unlink()
    print("\n| engine | file | time exponent a (t ∝ N^a) | peak-RSS exponent b |")
    print("|---|---|---|---|")
    for kind, file in (("duckdb", "parquet"), ("duckdb", "csv"), ("reference", "csv")):
        sel = [r for r in rows if r["engine"] == kind and r["file"] == file
               and r["memory_limit"] in (args.memory_limit[0], "—")]
        if len(sel) >= 2:
            print(f"| {kind} | {file} | {exponent([r['events'] for r in sel], [r['seconds'] for r in sel]):.2f} | "
                  f"{exponent([r['events'] for r in sel], [r['peak_rss_mb'] for r in sel]):.2f} |")
    return {"watchlogs": rows}


MERGE_CHILD = r"""
import json, sys, time
from pathlib import Path
kind, folder = sys.argv[1], Path(sys.argv[2])
parts = sorted((folder / "parts").glob("*.parquet"))
t = time.perf_counter()
if kind == "stream":
    from movies2scenes.scene_pairs import merge_parts
    out = folder / "out"
    out.mkdir(exist_ok=True)
    rows = merge_parts(parts, out, 4, 16).rows
else:
    import pyarrow.parquet as pq
    every = [r for p in parts for r in pq.read_table(p).to_pylist()]
    top = sorted(every, key=lambda r: (-r["score"], r["key"]))[:16]
    rows = len(every)
print(json.dumps({{"seconds": time.perf_counter() - t, "rows": rows}}))
"""


def merge(args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from movies2scenes.scene_pairs import PAIRS_SCHEMA

    per_unit = 64 * 75
    rows_out = []
    print(f"mine-scene-pairs merge: units of {per_unit:,} rows (64 movie pairs × 75 scene pairs)")
    print("| rows | units | engine | seconds | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for n in [int(float(x)) for x in args.rows]:
        with tempfile.TemporaryDirectory(prefix="m2s-merge-") as d:
            folder = Path(d)
            (folder / "parts").mkdir()
            rng = np.random.default_rng(0)
            units = (n + per_unit - 1) // per_unit
            for u in range(units):
                k = min(per_unit, n - u * per_unit)
                pair = np.arange(k) // 75 + u * 64
                table = pa.table({"movie_a": np.char.add("a", pair.astype(str)), "start_a": rng.integers(0, 3000, k).astype(np.int32),
                                  "movie_b": np.char.add("b", pair.astype(str)), "start_b": rng.integers(0, 3000, k).astype(np.int32),
                                  "score": rng.random(k).astype(np.float32), "source": ["cowatch"] * k,
                                  "shard": [f"scenes-{u:06d}.tar"] * k, "key": [f"{u:06d}_{r:06d}" for r in range(k)]},
                                 schema=PAIRS_SCHEMA).replace_schema_metadata({"stamp": "bench", "skipped": "[]"})
                pq.write_table(table, folder / "parts" / f"{u:06d}.parquet")
            for kind in ("stream", "dicts"):
                if kind == "dicts" and n > args.reference_rows:
                    continue
                res = run_command([sys.executable, "-c", MERGE_CHILD.format(root=str(ROOT)), kind, str(folder)],
                                  reports=True)
                rows_out.append({"rows": n, "units": units, "engine": kind, **res})
                print(f"| {n:,} | {units:,} | {kind} | {res['seconds']:.1f} | {res['peak_rss_mb']:.0f} |", flush=True)
    for kind in ("stream", "dicts"):
        sel = [r for r in rows_out if r["engine"] == kind]
        if len(sel) >= 2:
            print(f"{kind}: time exponent {exponent([r['rows'] for r in sel], [r['seconds'] for r in sel]):.2f}, "
                  f"peak-RSS exponent {exponent([r['rows'] for r in sel], [r['peak_rss_mb'] for r in sel]):.2f}")
    return {"merge": rows_out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["watchlogs", "film", "catalogue", "merge"])
    ap.add_argument("--sizes", nargs="*", default=["1e5", "1e6", "1e7"])
    ap.add_argument("--movies", type=int, default=10_000)
    ap.add_argument("--memory-limit", nargs="+", default=["768MB"],
                    help="watchlogs: DuckDB memory_limit(s), side by side (default: movie_pairs.cowatch_memory's)")
    ap.add_argument("--reference-max", type=float, default=1e7, help="largest size for the in-memory reference")
    ap.add_argument("--film-shots", nargs="*", type=int, default=[500, 2000], help="film: movie lengths in shots")
    ap.add_argument("--decoder", default="auto", help="film: shots.decoder (auto picks PyAV above 256 MB)")
    ap.add_argument("--workdir", type=Path, help="film/catalogue: keep the generated data here (default: a temp folder)")
    ap.add_argument("--titles", nargs="*", type=int, default=[1000, 4000, 16000], help="catalogue: sizes")
    ap.add_argument("--shots", nargs=2, type=int, default=[1000, 3000], help="catalogue: shots per movie (range)")
    ap.add_argument("--events-per-title", type=int, default=1000)
    ap.add_argument("--missing", type=float, default=0.01, help="catalogue: share of titles without features")
    ap.add_argument("--max-shots", type=int, default=1024, help="catalogue: movie_encoder.max_shots (paper: 1024)")
    ap.add_argument("--steps", type=int, default=20, help="catalogue: movie-encoder optimiser steps")
    ap.add_argument("--mine-sample", type=int, default=300, help="catalogue: movie pairs mined (0 = all)")
    ap.add_argument("--keep", action="store_true", help="catalogue: keep the generated folders")
    ap.add_argument("--rows", nargs="*", default=["1e5", "1e6", "6e6"], help="merge: scene-pair rows")
    ap.add_argument("--reference-rows", type=float, default=1e6, help="merge: largest size loaded as dicts")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {"watchlogs": watchlogs, "film": film, "catalogue": catalogue, "merge": merge}[args.part](args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
