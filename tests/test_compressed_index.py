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


def embeddings_file(path: Path, emb: np.ndarray) -> Path:
    n = len(emb)
    table = pa.table({"video": [f"v{i // 20:04d}.mp4" for i in range(n)], "scene": pa.array(np.arange(n) % 20, pa.int32()),
                      "start_shot": pa.array(np.arange(n) % 20, pa.int32()),
                      "end_shot": pa.array(np.arange(n) % 20 + 1, pa.int32()),
                      "start_frame": pa.array(np.arange(n) * 10, pa.int64()),
                      "end_frame": pa.array(np.arange(n) * 10 + 10, pa.int64()),
                      "start_time": np.arange(n) * 1.0, "end_time": np.arange(n) * 1.0 + 1.0,
                      "embedding": pa.array(list(emb), pa.list_(pa.float32(), emb.shape[1]))})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
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
    assert json.loads((tmp_path / "big" / "index.json").read_text())["kind"] == "ivfpq"
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
