"""Issue 43 (3): `m2s index` picks a compressed faiss index above a size (IVF-PQ; HNSW on request),
measures its recall@10 against exact search at build time, and `m2s search` uses it with its
recorded parameters; a damaged compressed index is refused like a flat one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from movies2scenes.cli import main


def clustered(n: int = 2000, d: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)) * 3
    return (centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, d))).astype(np.float32)


def embeddings_file(path: Path, emb: np.ndarray, prefix: str = "v") -> Path:
    n = len(emb)
    table = pa.table({"video": [f"{prefix}{i // 20:04d}.mp4" for i in range(n)], "scene": pa.array(np.arange(n) % 20, pa.int32()),
                      "start_shot": pa.array(np.arange(n) % 20, pa.int32()),
                      "end_shot": pa.array(np.arange(n) % 20 + 1, pa.int32()),
                      "start_frame": pa.array(np.arange(n) * 10, pa.int64()),
                      "end_frame": pa.array(np.arange(n) * 10 + 10, pa.int64()),
                      "start_time": np.arange(n) * 1.0, "end_time": np.arange(n) * 1.0 + 1.0,
                      "embedding": pa.array(list(emb), pa.list_(pa.float32(), emb.shape[1]))})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("kind", ["ivfpq", "ivfpqr", "ivfsq8", "hnsw"])
def test_a_compressed_index_reports_the_recall_the_test_recomputes(kind, tmp_path, capsys):
    import faiss

    from movies2scenes.apps.embed import read_index_files, read_index_record

    emb = clustered()
    src = embeddings_file(tmp_path / "e.parquet", emb)
    assert main(["index", str(src), "--out", str(tmp_path / "idx"), "--index", kind]) == 0
    assert "recall@10 against exact search" in capsys.readouterr().out
    meta = read_index_record(tmp_path / "idx")
    assert meta["kind"] == kind and 0.0 <= meta["recall_at_10"] <= 1.0
    index, _ = read_index_files(tmp_path / "idx", meta)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    q = x[np.random.default_rng(1).choice(len(x), 300, replace=False)]  # other queries than the build's
    truth, got = exact.search(q, 10)[1], index.search(q, 10)[1]
    recomputed = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)])
    assert abs(recomputed - meta["recall_at_10"]) < 0.05, (recomputed, meta["recall_at_10"])
    if kind == "ivfpq":  # compressed: 8 codes of a byte per 32-d vector (+ ids, lists, codebooks)
        assert (tmp_path / "idx" / "index.faiss").stat().st_size < emb.nbytes / 2


def test_the_automatic_choice_switches_at_flat_max_and_search_finds_planted_duplicates(tmp_path, capsys):
    emb = clustered()
    emb[1234] = emb[17] + 1e-3  # a planted near-duplicate of scene 17 in another video
    src = embeddings_file(tmp_path / "e.parquet", emb)
    assert main(["index", str(src), "--out", str(tmp_path / "small")]) == 0  # 2,000 ≤ 200,000: exact
    assert json.loads((tmp_path / "small" / "index.json").read_text())["kind"] == "flat"
    assert main(["index", str(src), "--out", str(tmp_path / "big"), "--flat-max", "500"]) == 0
    assert json.loads((tmp_path / "big" / "index.json").read_text())["kind"] == "ivfsq8"
    for folder in ("small", "big"):
        capsys.readouterr()
        assert main(["search", str(tmp_path / folder), "--query", str(src), "--row", "17", "-k", "1",
                     "--exclude", "video", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)["hits"]
        assert hits[0]["video"] == "v0061.mp4" and hits[0]["start_frame"] == 12340, folder


def test_a_damaged_compressed_index_is_refused(tmp_path, capsys):
    src = embeddings_file(tmp_path / "e.parquet", clustered(2000))
    assert main(["index", str(src), "--out", str(tmp_path / "idx"), "--index", "ivfpq"]) == 0
    f = tmp_path / "idx" / "index.faiss"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x20
    f.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--query", str(src), "--row", "0"]) == 2
    assert "not the file `m2s index` wrote" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "ivfpqr", "ivfsq8", "hnsw"])
def test_search_memory_maps_the_index_file_and_answers_as_the_loaded_one(kind, tmp_path):
    """`m2s search` reads the index memory-mapped where faiss can: the file is mapped into the
    process (/proc/self/maps) and the neighbours are those of the index read into memory."""
    from movies2scenes.apps.embed import read_index_files, read_index_record

    emb = clustered()
    src = embeddings_file(tmp_path / "e.parquet", emb)
    assert main(["index", str(src), "--out", str(tmp_path / "idx"), "--index", kind]) == 0
    meta = read_index_record(tmp_path / "idx")
    mapped, _ = read_index_files(tmp_path / "idx", meta)
    assert str((tmp_path / "idx" / "index.faiss").resolve()) in Path("/proc/self/maps").read_text()
    loaded, _ = read_index_files(tmp_path / "idx", meta, mmap=False)
    q = (emb / np.linalg.norm(emb, axis=1, keepdims=True))[:50]
    assert np.array_equal(mapped.search(q, 10)[1], loaded.search(q, 10)[1])


def _index_state(d: Path) -> dict:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_adding_movies_keeps_the_trained_quantisers_resumes_after_a_kill_and_skips_what_is_in(tmp_path, capsys,
                                                                                               monkeypatch):
    import faiss

    from movies2scenes.apps import embed as app
    from movies2scenes.apps.embed import read_index_files, read_index_record

    emb = clustered(3000)
    emb[2500] = emb[17] + 1e-3  # a planted near-duplicate of scene 17, in the file added later
    first = embeddings_file(tmp_path / "a.parquet", emb[:2000])
    later = embeddings_file(tmp_path / "b.parquet", emb[2000:], prefix="w")
    for name in ("idx", "killed"):
        assert main(["index", str(first), "--out", str(tmp_path / name), "--index", "ivfpq"]) == 0
    owner = read_index_files(tmp_path / "idx", read_index_record(tmp_path / "idx"), mmap=False)[0]
    before = faiss.extract_index_ivf(owner)  # a view: ``owner`` keeps it alive
    centroids = before.quantizer.reconstruct_n(0, before.nlist)
    assert main(["index", str(later), "--out", str(tmp_path / "idx"), "--add"]) == 0
    assert "1000 scenes of 1 file(s) added → 3000 scenes" in capsys.readouterr().out
    meta = read_index_record(tmp_path / "idx")
    assert meta["count"] == 3000 and meta["generation"] == 1 and 0.5 <= meta["recall_at_10"] <= 1.0
    owner = read_index_files(tmp_path / "idx", meta, mmap=False)[0]
    after = faiss.extract_index_ivf(owner)
    assert np.array_equal(after.quantizer.reconstruct_n(0, after.nlist), centroids)  # not retrained
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["index-1.faiss", "index.json", "meta-1.parquet"]
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--query", str(first), "--row", "17", "-k", "1",
                 "--exclude", "video", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert (hit["video"], hit["start_frame"]) == ("w0025.mp4", 5000)  # found in the added file
    done = _index_state(tmp_path / "idx")
    assert main(["index", str(later), str(first), "--out", str(tmp_path / "idx"), "--add"]) == 0
    assert "nothing to add" in capsys.readouterr().out and _index_state(tmp_path / "idx") == done

    real_write_json = app.write_json

    def killed(path, data):  # the process dies before index.json names the new generation
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "write_json", killed)
    assert main(["index", str(later), "--out", str(tmp_path / "killed"), "--add"]) == 130  # Ctrl-C's status
    monkeypatch.setattr(app, "write_json", real_write_json)
    meta = read_index_record(tmp_path / "killed")
    assert meta["count"] == 2000 and read_index_files(tmp_path / "killed", meta)[0].ntotal == 2000  # still the old one
    assert main(["index", str(later), "--out", str(tmp_path / "killed"), "--add"]) == 0
    assert _index_state(tmp_path / "killed") == done  # the same result as the uninterrupted add


def test_adding_embeddings_of_another_width_is_refused_naming_the_file(tmp_path, capsys):
    src = embeddings_file(tmp_path / "e.parquet", clustered(500))
    other = embeddings_file(tmp_path / "other.parquet", clustered(100, d=16))
    assert main(["index", str(src), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["index", str(other), "--out", str(tmp_path / "idx"), "--add"]) == 2
    err = capsys.readouterr().err
    assert "other.parquet" in err and "16-d" in err
    assert main(["index", str(other), "--out", str(tmp_path / "idx"), "--add", "--index", "hnsw"]) == 2
