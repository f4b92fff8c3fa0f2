"""The cost of the artefact checks (issue 29, class 1) on a feature-level catalogue of bench/scale.py's
sizes (16,000 titles × 1,000–3,000 shots × 96-d fp16 ≈ 6 GB): one table, measured side by side in
one run.

* the up-to-date check of a per-movie stage (``protocol.is_done``): DONE.json with its ``files``
  record parsed, every file's size compared (one ``stat`` each), against the same check without a
  record (what it did before);
* the check a later stage makes before it starts (``protocol.stage_input_hash``): the same sizes;
* first-read verification: reading every array (``np.load`` + a float32 sum, a minimal consumer)
  with and without ``integrity.Verifier`` hashing it first — the ratio is the overhead a stage pays
  once per process; the page cache is warm for both (written just before, read once before timing);
* ``--verify`` (every recorded file hashed): seconds and GB/s.

    python bench/integrity.py [--titles 16000] [--shots 1000 3000] [--workdir DIR] [--json FILE]
    python bench/integrity.py --smoke          # 200 titles of 50–100 shots, seconds (make test runs it)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from movies2scenes.features import ShotFeatures, write_index, write_movie_features
from movies2scenes.integrity import Verifier, file_record
from movies2scenes.stages.protocol import is_done, stage_input_hash, write_done


def make_features(folder: Path, titles: int, shots: tuple[int, int], dim: int = 96, seed: int = 0) -> dict:
    """A finished shot_features stage of random fp16 arrays, recorded as the stage records them."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(titles):
        n = int(rng.integers(shots[0], shots[1] + 1))
        rows.append(write_movie_features(folder, f"tt{i:07d}", rng.standard_normal((n, dim), np.float32)))
    write_index(folder, rows)
    files = {name: f for r in rows for name, f in r["files"].items()}
    files["index.parquet"] = file_record(folder / "index.parquet")
    write_done(folder, "extract_shot_features", "bench", "bench", {"movies": titles}, time.time(), files=files)
    return {"titles": titles, "shots": sum(r["num_shots"] for r in rows),
            "bytes": sum(f[0] for f in files.values())}


def timed(fn, repeat: int = 3) -> float:
    """The best of ``repeat`` runs, seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def read_all(feats: ShotFeatures, verifier=None) -> float:
    total = 0.0
    for m in feats.movie_ids:
        if verifier is not None:
            verifier(feats.dir / feats.rows[m]["file"])
        total += float(np.asarray(feats.movie(m), np.float32).sum())
    return total


def measure(folder: Path) -> dict:
    done = folder / "DONE.json"
    rec = json.loads(done.read_text())
    size_check = timed(lambda: is_done(folder, "bench", "bench"))
    bare = folder.parent / "bare"
    bare.mkdir(exist_ok=True)
    (bare / "DONE.json").write_text(json.dumps({k: v for k, v in rec.items() if k != "files"}))
    old_check = timed(lambda: is_done(bare, "bench", "bench"))
    upstream = timed(lambda: stage_input_hash(done))
    feats = ShotFeatures(folder)
    read_all(feats)  # warm the page cache
    read = timed(lambda: read_all(feats), repeat=2)
    verified_read = timed(lambda: read_all(feats, Verifier()), repeat=2)  # a fresh verifier: every file hashed
    full = timed(lambda: is_done(folder, "bench", "bench", content=True), repeat=1)
    return {"done_json_bytes": done.stat().st_size, "up_to_date_s": size_check, "up_to_date_without_record_s": old_check,
            "upstream_check_s": upstream, "read_s": read, "verified_read_s": verified_read,
            "first_read_overhead": verified_read / read, "verify_all_s": full}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--titles", type=int, default=16000)
    ap.add_argument("--shots", nargs=2, type=int, default=[1000, 3000])
    ap.add_argument("--smoke", action="store_true", help="200 titles of 50–100 shots")
    ap.add_argument("--workdir", type=Path, help="keep the generated features here (default: a temp folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.smoke:
        args.titles, args.shots = 200, [50, 100]
    base = Path(args.workdir or tempfile.mkdtemp(prefix="m2s-integrity-"))
    folder = base / "shot_features"
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    info = make_features(folder, args.titles, tuple(args.shots))
    info["generate_s"] = time.perf_counter() - t
    r = measure(folder)
    gb = info["bytes"] / 1e9
    print(f"{info['titles']:,} titles, {info['shots']:,} shots, {gb:.2f} GB of fp16 features "
          f"(generated in {info['generate_s']:.0f} s), DONE.json {r['done_json_bytes'] / 1e6:.2f} MB")
    print("| check | seconds | note |\n|---|---|---|")
    print(f"| up-to-date check, sizes of every recorded file | {r['up_to_date_s']:.3f} | without a record: "
          f"{r['up_to_date_without_record_s']:.3f} s |")
    print(f"| a later stage's start (stage_input_hash) | {r['upstream_check_s']:.3f} | |")
    print(f"| read every array (np.load + sum) | {r['read_s']:.2f} | warm page cache |")
    print(f"| the same, each file hashed first (first read) | {r['verified_read_s']:.2f} | "
          f"{r['first_read_overhead']:.2f} × the read |")
    print(f"| --verify: every recorded file hashed | {r['verify_all_s']:.2f} | {gb / r['verify_all_s']:.2f} GB/s |")
    if args.json:
        args.json.write_text(json.dumps(info | r, indent=1))
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
