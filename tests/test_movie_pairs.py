"""Movie similarity sources on real logs (MovieLens-100k) and on the demo world; bad metadata."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from movies2scenes.catalogue import CatalogueError, load_catalogue
from movies2scenes.config import load
from testkit.oracles import cowatch_pairs
from movies2scenes.similarity import (
    Pairs,
    combine,
    genre_pairs,
    genre_share_rate,
    genre_synopsis_pairs,
    kg_pairs,
    nearest_pairs,
    random_pairs,
    synopsis_pairs,
)
from movies2scenes.stages import build_movie_pairs

from testkit.videos import write_catalogue

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ml100k() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("recbole==1.2.1 is not installed: run `make setup` (pip install --no-deps)")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"


def _tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="latin-1") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[1:]


def _random_rate(genres: dict[str, set], n: int = 20000) -> float:
    rng = np.random.default_rng(0)
    ids = sorted(genres)
    return genre_share_rate([tuple(rng.choice(ids, 2, replace=False)) for _ in range(n)], genres)


def test_movielens_cowatch_pairs_share_genres_far_more_than_random(ml100k):
    items = {r[0]: set(r[3].split()) for r in _tsv(ml100k / "ml-100k.item")}
    inter = _tsv(ml100k / "ml-100k.inter")
    pairs = cowatch_pairs([r[0] for r in inter], [r[1] for r in inter], [float(r[3]) for r in inter],
                          set(items), per_movie=3)
    rate, base = genre_share_rate(list(pairs.scores), items), _random_rate(items)
    print(f"MovieLens-100k co-watch pairs: {len(pairs)} pairs over {len(pairs.movies())} movies, "
          f"share a genre {rate:.3f} vs random pairs {base:.3f}")
    assert len(pairs.movies()) > 1500
    assert rate > base + 0.1


def test_movielens_kg_pairs(ml100k):
    items = {r[0]: set(r[3].split()) for r in _tsv(ml100k / "ml-100k.item")}
    link = {r[0]: r[1] for r in _tsv(ml100k / "ml-100k.link")}
    keep = {"film.film.genre", "film.film.directed_by", "film.film.written_by"}
    triples = [tuple(r) for r in _tsv(ml100k / "ml-100k.kg") if r[1] in keep]
    pairs = kg_pairs(triples, link, set(items), per_movie=3, method="transe", dim=32, epochs=30)
    rate = genre_share_rate(list(pairs.scores), items)
    print(f"MovieLens-100k kg pairs (genre/director/writer triples, TransE): {len(pairs)} pairs, "
          f"share a genre {rate:.3f} vs random {_random_rate(items):.3f}; skipped {pairs.skipped}")
    assert len(pairs.movies()) > 1000 and set(pairs.movies()) <= set(link)


def test_genre_pairs_are_seeded_and_share_a_genre():
    genres = {"a": ("x",), "b": ("x", "y"), "c": ("y",), "d": (), "e": ("z",), "f": ("x",)}
    allowed = set(genres)
    p = genre_pairs(genres, allowed, per_movie=2, seed=1)
    assert p.scores == genre_pairs(genres, allowed, per_movie=2, seed=1).scores
    assert all(set(genres[a]) & set(genres[b]) for a, b in p.scores)
    assert p.skipped == {"movies without genres": 1}
    assert p.scores[("a", "b")] == pytest.approx(0.5)  # Jaccard
    assert "e" not in p.movies()  # no partner shares "z"


def test_movielens_cowatch_out_of_core_equals_the_reference(ml100k, tmp_path):
    """DuckDB over the 100k real watch events (spilling under a 200 MB limit) gives exactly the
    in-memory reference's pairs and scores."""
    from movies2scenes.cowatch import cowatch_pairs_from_file

    inter = _tsv(ml100k / "ml-100k.inter")
    users, movies, times = [r[0] for r in inter], [r[1] for r in inter], [r[3] for r in inter]
    known = set(movies)
    ref = cowatch_pairs(users, movies, [float(t) for t in times], known, per_movie=3)
    logs = tmp_path / "ml.csv"
    with logs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "movie_id", "timestamp"])
        w.writerows(zip(users, movies, times))
    got = cowatch_pairs_from_file(logs, known, known, per_movie=3, memory_limit="200MB", temp_dir=tmp_path / "spill")
    assert got.rows() == ref.rows() and len(got) > 1000


def test_cowatch_counts_followers_in_time_order_and_skips_duplicates():
    users = ["u1", "u1", "u1", "u2", "u2", "u2", "u2"]
    movies = ["A", "B", "C", "C", "A", "B", "B"]
    times = [3, 1, 2, 1, 2, 3, 3]  # u1 watched B, C, A; u2: C, A, B (+ a duplicate row)
    p = cowatch_pairs(users, movies, times, {"A", "B", "C"}, per_movie=1)
    assert p.skipped == {"duplicate log rows": 1}
    # followers: B→C, C→A (u1); C→A, A→B (u2): C's top follower is A (2 times)
    assert p.scores[("A", "C")] == 2.0 and ("A", "B") in p.scores and ("B", "C") in p.scores
    q = cowatch_pairs(users, movies, times, {"A", "B"}, per_movie=1)  # C excluded: never a partner
    assert all("C" not in pair for pair in q.scores)
    assert q.skipped["events of excluded movies"] == 2


def test_synopsis_pairs_use_the_local_model():
    texts = {"s1": "Astronauts repair a damaged space station orbiting Mars.",
             "s2": "A rocket crew drifts through space after their spaceship fails.",
             "c1": "A chef opens a small bakery and perfects her bread recipe.",
             "c2": "Two cooks compete in a kitchen to bake the best cake.",
             "x": "   "}
    p = synopsis_pairs(texts, set(texts), per_movie=1)
    assert p.skipped == {"movies without synopsis": 1}
    assert set(p.scores) == {("s1", "s2"), ("c1", "c2")}


def test_genre_synopsis_pairs_need_both_to_agree():
    # s1/s2 share genre and topic; s3 shares s1's topic but not its genre; c1/c2 are cooking
    texts = {"s1": "Astronauts repair a damaged space station orbiting Mars.",
             "s2": "A rocket crew drifts through space after their spaceship fails.",
             "s3": "An astronaut repairs a broken station in orbit around Mars.",
             "c1": "A chef opens a small bakery and perfects her bread recipe.",
             "c2": "Two cooks compete in a kitchen to bake the best cake."}
    genres = {"s1": ("scifi",), "s2": ("scifi",), "s3": ("comedy",), "c1": ("comedy",), "c2": ("comedy",),
              "g": ()}
    p = genre_synopsis_pairs(genres, texts, set(genres), per_movie=1)
    assert p.skipped == {"movies without genres or synopsis": 1}
    assert ("s1", "s2") in p.scores and ("s1", "s3") not in p.scores
    # synopsis alone pairs s1 with its near-paraphrase s3
    assert ("s1", "s3") in synopsis_pairs(texts, set(texts), per_movie=1).scores
    assert max(p.scores.values()) <= 2.0 + 1e-5  # genre cosine + synopsis cosine


def test_random_pairs_are_seeded_and_ignore_metadata():
    ids = [f"m{i:02d}" for i in range(40)]
    p = random_pairs(ids, set(ids[:30]), per_movie=3, seed=4)
    assert p.scores == random_pairs(ids, set(ids[:30]), per_movie=3, seed=4).scores
    assert p.scores != random_pairs(ids, set(ids[:30]), per_movie=3, seed=5).scores
    assert p.movies() <= set(ids[:30]) and len(p) >= 30 * 3 // 2
    assert random_pairs(["a"], {"a"}).scores == {}


def test_nearest_pairs_equal_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    ids = [f"m{i:02d}" for i in range(30)]
    p = nearest_pairs(ids, x, per_movie=2)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    want = Pairs()
    for i in range(30):
        for j in np.argsort(-sims[i])[:2]:
            want.add(ids[i], ids[j], float(sims[i, j]))
    assert set(p.scores) == set(want.scores)


def test_combine_weights_and_cap():
    a, b = Pairs(), Pairs()
    a.add("m1", "m2", 10.0)
    a.add("m1", "m3", 5.0)
    a.add("m1", "m4", 1.0)
    b.add("m1", "m3", 1.0)
    b.add("m2", "m4", 0.5)
    u = combine({"a": a, "b": b}, {"a": 1.0, "b": 2.0})
    assert u.scores[("m1", "m2")] == pytest.approx(1.0)
    assert u.scores[("m1", "m3")] == pytest.approx(0.5 + 2.0)
    assert u.scores[("m2", "m4")] == pytest.approx(1.0)
    assert u.scores[("m1", "m4")] == pytest.approx(0.1)
    capped = combine({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, per_movie=1)
    # m1 nominates m3, m4 nominates m2: the weak (m1, m4) is nobody's best partner
    assert ("m1", "m3") in capped.scores and ("m1", "m4") not in capped.scores


def _stage_cfg(run, world, *extra):
    return load([ROOT / "configs" / "cpu-tiny.yaml"],
                [f"run_dir={run}", f"catalogue={world / 'catalogue.csv'}",
                 f"watch_logs={world / 'watch_logs.csv'}", "movie_pairs.kg_epochs=20", *extra])


def test_stage_keeps_evaluation_movies_out(small_world, tmp_path):
    cat = load_catalogue(small_world / "catalogue.csv")
    rows = [{"movie_id": m.movie_id, "video": str(m.video), "genres": "|".join(m.genres),
             "synopsis": m.synopsis, "split": ["train", "test", "train", "val"][i]} for i, m in enumerate(cat)]
    catalogue = write_catalogue(tmp_path / "cat.csv", rows)
    cfg = _stage_cfg(tmp_path / "run", small_world, f"catalogue={catalogue}",
                     "movie_pairs.sources=[cowatch,genre,synopsis,kg,random,genre_synopsis]")
    assert build_movie_pairs.run(cfg) == 0
    out = tmp_path / "run" / "movie_pairs"
    kept_out = {r["movie_id"] for r in rows if r["split"] != "train"}
    for source in ("cowatch", "genre", "synopsis", "kg", "combined", "random", "genre_synopsis"):
        table = pq.read_table(out / f"{source}.parquet").to_pylist()
        assert not ({r["movie_a"] for r in table} | {r["movie_b"] for r in table}) & kept_out, source
    summary = json.loads((out / "summary.json").read_text())
    assert summary["excluded_movies"] == 2
    assert build_movie_pairs.run(cfg) == 0  # done: a no-op


def test_bad_metadata(small_world, tmp_path):
    logs = tmp_path / "logs.csv"
    logs.write_text("user_id,movie_id,timestamp\nu1,m0000,100\nu1,nope,101\n")
    with pytest.raises(CatalogueError, match=r"logs\.csv:3: unknown movie_id 'nope'"):
        build_movie_pairs.run(_stage_cfg(tmp_path / "r1", small_world, f"watch_logs={logs}"))
    logs.write_text("user_id,movie_id,timestamp\nu1,m0000,last tuesday\n")
    with pytest.raises(CatalogueError, match=r"logs\.csv:2: bad timestamp"):
        build_movie_pairs.run(_stage_cfg(tmp_path / "r2", small_world, f"watch_logs={logs}"))
    logs.write_text("user_id,movie_id,timestamp\nu1,m0000,1,extra\n")
    with pytest.raises(CatalogueError, match=r"logs\.csv:2: more fields"):
        build_movie_pairs.run(_stage_cfg(tmp_path / "r3", small_world, f"watch_logs={logs}"))
    kg = tmp_path / "kg.csv"
    kg.write_text("head,relation,tail\nm0000,directed_by,d1\nm0001,,d2\n")
    with pytest.raises(CatalogueError, match=r"kg\.csv:3: empty head, relation or tail"):
        build_movie_pairs.run(_stage_cfg(tmp_path / "r4", small_world, f"movie_pairs.kg_triples={kg}"))
    from movies2scenes.config import ConfigError

    with pytest.raises(ConfigError, match="watch_logs"):
        build_movie_pairs.run(_stage_cfg(tmp_path / "r5", small_world, "watch_logs="))
    # documented skips: duplicate log rows, movies without genres or synopsis are counted
    cat = load_catalogue(small_world / "catalogue.csv")
    rows = [{"movie_id": m.movie_id, "video": str(m.video), "genres": "" if i == 0 else "|".join(m.genres),
             "synopsis": "" if i == 1 else m.synopsis} for i, m in enumerate(cat)]
    catalogue = write_catalogue(tmp_path / "cat.csv", rows)
    logs.write_text("user_id,movie_id,timestamp\nu1,m0000,1\nu1,m0000,1\nu1,m0001,2\nu1,m0002,3\n")
    assert build_movie_pairs.run(_stage_cfg(tmp_path / "r6", small_world, f"catalogue={catalogue}",
                                            f"watch_logs={logs}")) == 0
    skipped = {k: v["skipped"] for k, v in
               json.loads((tmp_path / "r6" / "movie_pairs" / "summary.json").read_text())["sources"].items()}
    assert skipped["cowatch"] == {"duplicate log rows": 1}
    assert skipped["genre"] == {"movies without genres": 1}
    assert skipped["synopsis"] == {"movies without synopsis": 1}


def test_genre_pairs_draw_as_the_per_movie_candidate_list_did():
    """genre_pairs shares one candidate list per genre set (O(N) not O(N²/G)); its draws must be
    those of the plain per-movie version: rng.choice(sorted(union of its genres' movies − itself))."""
    from collections import defaultdict

    from movies2scenes.similarity import Pairs, genre_pairs

    rng = np.random.default_rng(1)
    names = [f"g{i}" for i in range(6)]
    genres = {f"m{i:04d}": tuple(sorted(set(rng.choice(names, rng.integers(0, 4))))) for i in range(600)}
    allowed = {m for m in genres if rng.random() < 0.9}
    ref, draw = Pairs(), np.random.default_rng([5, 31])
    by_genre = defaultdict(list)
    for m in sorted(allowed):
        for g in genres[m]:
            by_genre[g].append(m)
    for m in sorted(allowed):
        mine = set(genres[m])
        candidates = sorted({n for g in mine for n in by_genre[g]} - {m})
        if candidates:
            for n in draw.choice(candidates, size=min(3, len(candidates)), replace=False):
                ref.add(m, str(n), len(mine & set(genres[n])) / len(mine | set(genres[n])))
    got = genre_pairs(genres, allowed, 3, 5)
    assert len(got) > 500 and got.rows() == ref.rows()
