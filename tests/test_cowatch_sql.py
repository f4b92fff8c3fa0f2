"""Co-watch pairs out of core (DuckDB, movies2scenes/cowatch.py) against the in-memory reference
(testkit.oracles.cowatch_pairs): the same pairs and scores on MovieLens-100k and on random logs with ties,
duplicates and excluded movies; CSV and Parquet; row-named errors."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from movies2scenes.catalogue import CatalogueError
from movies2scenes.cowatch import cowatch_pairs_from_file
from testkit.oracles import cowatch_pairs


def _write(path, users, movies, times):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "movie_id", "timestamp"])
        w.writerows(zip(users, movies, times))
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lookahead", [1, 3])
def test_same_pairs_as_the_reference_on_random_logs(tmp_path, seed, lookahead):
    rng = np.random.default_rng(seed)
    n = 3000
    movies = [f"m{int(x):03d}" for x in rng.zipf(1.5, n) % 60]
    users = [f"u{int(x)}" for x in rng.integers(0, 150, n)]
    times = [int(x) for x in rng.integers(0, 40, n)]  # many ties: file order decides
    for k in rng.integers(0, n, 100):  # exact duplicate rows
        users.append(users[k]), movies.append(movies[k]), times.append(times[k])
    known = set(movies)
    allowed = {m for m in known if hash(m) % 4}  # some movies excluded from pairs
    ref = cowatch_pairs(users, movies, [float(t) for t in times], allowed, per_movie=3, lookahead=lookahead)
    path = _write(tmp_path / "logs.csv", users, movies, times)
    got = cowatch_pairs_from_file(path, known, allowed, per_movie=3, lookahead=lookahead)
    assert got.rows() == ref.rows() and len(got) > 50
    assert got.skipped == ref.skipped
    pq.write_table(pa.table({"user_id": users, "movie_id": movies, "timestamp": pa.array(times, pa.int64())}),
                   tmp_path / "logs.parquet")
    assert cowatch_pairs_from_file(tmp_path / "logs.parquet", known, allowed, 3, lookahead).rows() == ref.rows()


def test_iso_timestamps_and_errors_name_the_row(tmp_path):
    logs = tmp_path / "logs.csv"
    logs.write_text("user_id,movie_id,timestamp\nu1,A,2024-01-02T10:00:00Z\nu1,B,1704189601\n")
    assert cowatch_pairs_from_file(logs, {"A", "B"}, {"A", "B"}).rows() == [("A", "B", 1.0)]
    logs.write_text("user_id,movie_id,timestamp\nu1,A,1700000000\nu1,Z,1700000001\nu2,A,yesterday\n,A,1\nu,A,nan\n")
    with pytest.raises(CatalogueError) as e:
        cowatch_pairs_from_file(logs, {"A", "B"}, {"A", "B"})
    text = str(e.value)
    for want in ("logs.csv:3: unknown movie_id 'Z'", "logs.csv:4: bad timestamp 'yesterday'", "logs.csv:5: empty user_id",
                 "logs.csv:6: bad timestamp 'nan'"):
        assert want in text
    logs.write_text("user_id,movie_id,timestamp\nu1,A,1,extra\n")
    with pytest.raises(CatalogueError, match=r"logs\.csv:2: more fields"):
        cowatch_pairs_from_file(logs, {"A"}, {"A"})
    logs.write_text("user,movie,time\n")
    with pytest.raises(CatalogueError, match="lacks column"):
        cowatch_pairs_from_file(logs, {"A"}, {"A"})
    pq.write_table(pa.table({"user_id": ["u", "u"], "movie_id": ["A", "Q"], "timestamp": [1.0, 2.0]}), tmp_path / "l.parquet")
    with pytest.raises(CatalogueError, match=r"l\.parquet:row 2: unknown movie_id 'Q'"):
        cowatch_pairs_from_file(tmp_path / "l.parquet", {"A"}, {"A"})


def test_catalogue_check_validates_parquet_watch_logs(small_world, tmp_path, capsys):
    """`m2s catalogue --check CAT --logs LOGS.parquet`: the out-of-core validator counts the events;
    a bad row is named."""
    from movies2scenes.cli import main

    rows = list(csv.DictReader(open(small_world / "watch_logs.csv")))
    table = pa.table({k: [r[k] for r in rows] for k in ("user_id", "movie_id", "timestamp")})
    pq.write_table(table, tmp_path / "logs.parquet")
    assert main(["catalogue", "--check", str(small_world / "catalogue.csv"), "--logs", str(tmp_path / "logs.parquet")]) == 0
    assert f"{len(rows)} watch events, all valid" in capsys.readouterr().out
    bad = table.set_column(1, "movie_id", pa.array(["nope"] + [r["movie_id"] for r in rows[1:]]))
    pq.write_table(bad, tmp_path / "bad.parquet")
    assert main(["catalogue", "--check", str(small_world / "catalogue.csv"), "--logs", str(tmp_path / "bad.parquet")]) == 2
    assert "bad.parquet:row 1: unknown movie_id 'nope'" in capsys.readouterr().err
