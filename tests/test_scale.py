"""The feature-level scale harness at CI size (bench/scale.py catalogue): peak memory of
build-movie-pairs, train-movie-encoder and mining does not grow with the number of titles, the
stages complete with 1 % of titles lacking features, and CSV and Parquet watch logs give the
same co-watch pairs. The full sizes (10³–10⁴ titles, 10⁶–10⁷ events) are in bench/RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def test_catalogue_harness_memory_is_bounded_and_csv_equals_parquet(tmp_path):
    out = tmp_path / "scale.json"
    # 100 and 300 titles of 2,000–3,000 shots: holding every movie's features in float32 (as
    # train-movie-encoder once did) would add ~0.5 GB between the two sizes
    r = subprocess.run([sys.executable, "bench/scale.py", "catalogue", "--titles", "100", "300",
                        "--shots", "2000", "3000", "--events-per-title", "334", "--max-shots", "256",
                        "--steps", "3", "--mine-sample", "8", "--missing", "0.01", "--keep",
                        "--workdir", str(tmp_path), "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    small, large = json.loads(out.read_text())["catalogue"]
    assert large["events"] >= 100_000 and large["with_features"] < large["titles"]
    for stage in ("build-movie-pairs", "train-movie-encoder", "mining"):
        ratio = large[stage]["peak_rss_mb"] / small[stage]["peak_rss_mb"]
        assert ratio < 1.2, f"{stage}: peak RSS {small[stage]['peak_rss_mb']:.0f} → {large[stage]['peak_rss_mb']:.0f} MB"
    assert large["mining"]["scene_pairs"] > 0

    # the same logs as CSV: the same co-watch pairs, byte for byte in the table
    from movies2scenes.config import load
    from movies2scenes.stages import build_movie_pairs

    folder = tmp_path / "cat-300"
    csv_logs = folder / "watch_logs.csv"
    pcsv.write_csv(pq.read_table(folder / "watch_logs.parquet"), csv_logs)
    tables = []
    for logs in (folder / "watch_logs.parquet", csv_logs):
        run = tmp_path / f"run-{logs.suffix[1:]}"
        cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], [f"run_dir={run}", f"catalogue={folder / 'catalogue.csv'}",
                                                       f"watch_logs={logs}", "movie_pairs.sources=[cowatch]",
                                                       "movie_pairs.combined=[]"])
        assert build_movie_pairs.run(cfg) == 0
        tables.append(pq.read_table(run / "movie_pairs" / "cowatch.parquet"))
    assert tables[0].num_rows > 300 and tables[0].equals(tables[1])


def test_watchlogs_bench_smoke_compares_memory_limits_side_by_side():
    """bench/scale.py watchlogs at a smoke size: DuckDB at two memory limits and the in-memory
    reference give the same pairs (issue 42 (10) measures the default's peak RSS at 5·10⁶)."""
    r = subprocess.run([sys.executable, "bench/scale.py", "watchlogs", "--sizes", "2e4", "--movies", "200",
                        "--memory-limit", "768MB", "2GB", "--reference-max", "2e4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split("|") for line in r.stdout.splitlines() if line.startswith("| 20,000 |")]
    assert [(c[3].strip(), c[4].strip()) for c in rows] == [("duckdb", "768MB"), ("duckdb", "2GB"), ("duckdb", "768MB"),
                                                            ("duckdb", "2GB"), ("reference", "—")]
    assert len({c[7].strip() for c in rows}) == 1  # the same number of pairs every way
