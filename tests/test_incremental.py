"""A growing catalogue is incremental: per-movie artefacts are keyed by the movie's id, so adding,
removing or reordering titles processes only what changed (detect-shots, extract-shot-features)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from movies2scenes.catalogue import load_catalogue
from movies2scenes.config import load
from movies2scenes.shot_shards import shard_name
from movies2scenes.stages import detect_shots, extract_shot_features
from movies2scenes.stages.protocol import part_name

from testkit.videos import write_catalogue

ROOT = Path(__file__).resolve().parents[1]


def _rows(world: Path) -> list[dict]:
    return [{"movie_id": m.movie_id, "video": str(m.video), "genres": "|".join(m.genres), "synopsis": m.synopsis}
            for m in load_catalogue(world / "catalogue.csv")]


def _stamps(folder: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob(pattern))}


class Counting:
    """Wraps detect_shots.process_movie to record which movies it processed."""

    def __init__(self, monkeypatch):
        self.seen: list[str] = []
        real = detect_shots.process_movie

        def wrapped(movie, *a, **kw):
            self.seen.append(movie.movie_id)
            return real(movie, *a, **kw)

        monkeypatch.setattr(detect_shots, "process_movie", wrapped)


def test_detect_shots_adds_removes_and_reorders_only_what_changed(small_world, tmp_path, monkeypatch):
    rows = _rows(small_world)
    run = tmp_path / "run"

    def go(rows, name):
        cat = write_catalogue(tmp_path / f"{name}.csv", rows)
        cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], [f"run_dir={run}", f"catalogue={cat}"])
        counting = Counting(monkeypatch)
        assert detect_shots.run(cfg) == 0
        return counting.seen

    assert sorted(go(rows, "first")) == sorted(r["movie_id"] for r in rows)
    shots = run / "shots"
    before = _stamps(shots, "shots-*.tar")
    index_before = pq.read_table(shots / "index.parquet").to_pylist()

    # a title whose id sorts before every other, and the rows in reverse order: only it is decoded
    new = dict(rows[0], movie_id="0-added-title")
    assert go([new] + rows[::-1], "added") == ["0-added-title"]
    after = _stamps(shots, "shots-*.tar")
    assert {k: v for k, v in after.items() if k in before} == before  # old shards untouched
    assert set(after) - set(before) == {shard_name("0-added-title")}
    index = pq.read_table(shots / "index.parquet").to_pylist()
    assert [r for r in index if r["movie_id"] != "0-added-title"] == index_before
    assert [r["shot"] for r in index if r["movie_id"] == "0-added-title"] == \
        [r["shot"] for r in index_before if r["movie_id"] == rows[0]["movie_id"]]

    # reordering alone changes nothing at all (the stage is up to date)
    done = (shots / "DONE.json").read_text()
    assert go(rows[::-1] + [new], "reordered") == []
    assert (shots / "DONE.json").read_text() == done

    # removing a title removes its shard and record, and processes nothing
    assert go(rows[1:] + [new], "removed") == []
    gone = rows[0]["movie_id"]
    assert not (shots / shard_name(gone)).exists()
    assert not (shots / "parts" / part_name(gone)).exists()
    assert gone not in {r["movie_id"] for r in pq.read_table(shots / "index.parquet").to_pylist()}
    assert _stamps(shots, "shots-*.tar") == \
        {k: v for k, v in after.items() if k != shard_name(gone)}


def test_features_of_unchanged_movies_are_kept_when_a_title_is_added(encoded_run, small_world, tmp_path):
    """Same shot encoder, one more title in the shots stage: only its features are computed."""
    src, overrides = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    rows = _rows(small_world)
    cat = write_catalogue(tmp_path / "cat.csv", [dict(rows[2], movie_id="0-added-title")] + rows)
    ov = [o for o in overrides if not o.startswith(("run_dir=", "catalogue="))] + [f"run_dir={run}",
                                                                                   f"catalogue={cat}"]
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    feats = run / "shot_features"
    before = _stamps(feats, "features-*.npy")
    assert len(before) == len(rows)
    assert detect_shots.run(cfg) == 0
    assert extract_shot_features.run(cfg) == 0
    after = _stamps(feats, "features-*.npy")
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) == len(rows) + 1
    index = {r["movie_id"]: r for r in pq.read_table(feats / "index.parquet").to_pylist()}
    same = rows[2]["movie_id"]  # the added title is the same video: the same features (up to how
    # the batches were cut, which may change the last bits of a CPU kernel's sums)
    np.testing.assert_allclose(np.load(feats / index["0-added-title"]["file"]).astype(np.float32),
                               np.load(feats / index[same]["file"]).astype(np.float32), rtol=0, atol=2e-3)
