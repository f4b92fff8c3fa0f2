"""`m2s embed --catalogue` (issue 43): a catalogue's scene embeddings per movie on the executor —
a killed-and-resumed run and a launch of two shares give the single process's bytes, a bad video is
one failure, a run's stored shots are reused without decoding, and `m2s index` takes the folder.
(On Ray: tests/test_ray_executor.py.)"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def catalogue(world: Path, folder: Path, bad: bool = True) -> Path:
    """The small world's movies, plus a broken video."""
    rows = [{**r, "video": str((world / r["video"]).resolve())} for r in csv.DictReader(open(world / "catalogue.csv"))]
    if bad:
        broken = folder / "broken.mp4"
        broken.write_bytes(b"not a video")
        rows.append({**rows[0], "movie_id": "zz-broken", "video": str(broken)})
    out = folder / "catalogue.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def m2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "movies2scenes.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def embed(cat: Path, export: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return m2s("embed", "--catalogue", str(cat), "--encoder", str(export), "--out", str(out), *extra)


def digest(folder: Path) -> dict[str, str]:
    """sha256 of the artefacts (per-movie files, index, failures) and of the files DONE.json records."""
    out = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*"))
           if p.suffix in (".parquet", ".jsonl")}
    files = json.loads((folder / "DONE.json").read_text())["files"]  # the record's timings differ by run
    out["DONE.json"] = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return out


@pytest.mark.slow
def test_catalogue_embedding_resumes_and_shards_to_the_same_bytes(exported_run, small_world, tmp_path):
    run, _ = exported_run
    cat = catalogue(small_world, tmp_path)
    one = tmp_path / "one"
    r = embed(cat, run / "export", one)
    assert r.returncode == 0, r.stderr
    assert "of 4/5 movies" in r.stdout
    failures = (one / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 1 and json.loads(failures[0])["movie_id"] == "zz-broken"
    assert r.stderr.count("FAILED") == 1 and "zz-broken" in r.stderr
    reference = digest(one)
    index = pq.read_table(one / "index.parquet").to_pylist()
    assert [row["source"] for row in index] == ["decoded"] * 4
    rows = pq.read_table(one / index[0]["file"]).to_pylist()
    assert len(rows) == index[0]["scenes"] and rows[0]["start_shot"] == 0 and rows[0]["end_time"] > rows[0]["start_time"]

    # killed after some movies: a part deleted (its file half-written), the merge not done
    killed = tmp_path / "killed"
    shutil.copytree(one, killed)
    (killed / "DONE.json").unlink()
    (killed / "index.parquet").unlink()
    gone = index[1]
    (killed / "parts" / f"{gone['movie_id']}.json").unlink()
    (killed / gone["file"]).write_bytes(b"half")
    kept = (killed / index[0]["file"]).stat().st_mtime_ns
    r = embed(cat, run / "export", killed)
    assert r.returncode == 0, r.stderr
    assert digest(killed) == reference
    assert (killed / index[0]["file"]).stat().st_mtime_ns == kept  # finished movies are not redone

    # a launch of two shares (--shard i/2): the last one merges
    sharded = tmp_path / "sharded"
    assert embed(cat, run / "export", sharded, "--shard", "0/2").returncode == 0
    assert not (sharded / "DONE.json").exists()
    assert embed(cat, run / "export", sharded, "--shard", "1/2").returncode == 0
    assert digest(sharded) == reference

    # done: a no-op; m2s index takes the folder
    r = embed(cat, run / "export", one)
    assert r.returncode == 0 and "up to date" in r.stdout
    r = m2s("index", str(one), "--out", str(tmp_path / "idx"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["count"] == sum(x["scenes"] for x in index)


@pytest.mark.slow
def test_a_runs_stored_shots_are_embedded_without_decoding(exported_run, small_world, tmp_path, monkeypatch):
    from movies2scenes import retrieval
    from movies2scenes.apps.catalogue_embed import EmbedCatalogue
    from movies2scenes.config import load
    from movies2scenes.export import scene_settings

    run, _ = exported_run
    cat = catalogue(small_world, tmp_path, bad=False)

    def no_decode(*a, **k):
        raise AssertionError("a movie the run's shots stage saw was decoded again")

    monkeypatch.setattr(retrieval, "embed_video", no_decode)
    cfg = load([], [], base={"shots": scene_settings(run / "export")["shots"]})
    cfg.catalogue = str(cat)
    out = tmp_path / "reused"
    assert EmbedCatalogue(cfg, str(run / "export"), str(out), None, 1, 16, str(run / "shots")).run() == 0
    done = json.loads((out / "DONE.json").read_text())
    assert done["counts"]["from_run_shots"] == done["counts"]["ok"] == 4
    index = pq.read_table(out / "index.parquet").to_pylist()
    shots = pq.read_table(run / "shots" / "index.parquet").to_pylist()
    first = [s for s in shots if s["movie_id"] == index[0]["movie_id"]]
    rows = pq.read_table(out / index[0]["file"]).to_pylist()
    assert rows[0]["start_time"] == first[0]["start_time"] and rows[0]["start_frame"] == first[0]["start_frame"]


def test_catalogue_options_without_a_catalogue_are_refused(tmp_path):
    r = m2s("embed", "x.mp4", "--encoder", str(tmp_path), "--out", str(tmp_path / "o.parquet"), "--shard", "0/2")
    assert r.returncode == 2 and "go with --catalogue" in r.stderr
