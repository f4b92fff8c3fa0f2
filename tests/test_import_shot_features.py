"""`m2s import-shot-features`: per-movie arrays made elsewhere become a shot_features stage that the
movie encoder and the miner run on; own shot tables are mapped by time; bad files are clear errors
naming movie, file and row while the other movies are imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _copy(encoded_run, dest: Path) -> tuple[Path, list[str]]:
    src, ov = encoded_run
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("shot_features", "movie_encoder", "scene_pairs"))
    return dest, [o for o in ov if not o.startswith("run_dir=")] + [f"run_dir={dest}"]


def _shots(run: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in pq.read_table(run / "shots" / "index.parquet").to_pylist():
        out.setdefault(r["movie_id"], []).append(r)
    return out


def _their_features(encoded_run, dim: int = 40) -> dict[str, np.ndarray]:
    """'Someone else's model': the run's E_shot features through a seeded random projection."""
    from movies2scenes.features import ShotFeatures

    feats = ShotFeatures(encoded_run[0] / "shot_features")
    proj = np.random.default_rng(0).normal(size=(feats.dim, dim)).astype(np.float32)
    return {m: np.asarray(feats.movie(m), np.float32) @ proj for m in feats.movie_ids}


def test_imported_arrays_feed_the_movie_encoder_and_the_miner(encoded_run, tmp_path):
    from movies2scenes.config import load
    from movies2scenes.features import ShotFeatures
    from movies2scenes.stages import import_shot_features, mine_scene_pairs, train_movie_encoder

    run, ov = _copy(encoded_run, tmp_path / "run")
    theirs = _their_features(encoded_run)
    src = tmp_path / "clip"
    src.mkdir()
    for i, (m, x) in enumerate(sorted(theirs.items())):
        if i % 2:  # half as npy, half as parquet (one row per shot, shuffled, with a shot column)
            np.save(src / f"{m}.npy", x.astype(np.float64))
        else:
            order = np.random.default_rng(i).permutation(len(x))
            pq.write_table(pa.table({"shot": order, "embedding": [x[j].tolist() for j in order]}),
                           src / f"{m}.parquet")
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    assert import_shot_features.run(cfg, str(src)) == 0
    got = ShotFeatures(run / "shot_features")
    assert sorted(got.movie_ids) == sorted(theirs) and got.dim == 40
    for m, x in theirs.items():
        assert got.movie(m).dtype == np.float16
        np.testing.assert_allclose(np.asarray(got.movie(m), np.float32), x, rtol=2e-3, atol=2e-3)
    done = json.loads((run / "shot_features" / "DONE.json").read_text())
    assert done["counts"] == {"movies": len(theirs), "shots": sum(map(len, theirs.values())), "dim": 40, "failed": 0}
    assert import_shot_features.run(cfg, str(src)) == 0  # up to date: a no-op
    assert done == json.loads((run / "shot_features" / "DONE.json").read_text())
    assert train_movie_encoder.run(cfg) == 0 and mine_scene_pairs.run(cfg) == 0
    assert pq.read_table(run / "scene_pairs" / "pairs.parquet").num_rows > 0
    # extract-shot-features does not silently replace imported features
    from movies2scenes.config import ConfigError
    from movies2scenes.stages import extract_shot_features

    with pytest.raises(ConfigError, match="imported from"):
        extract_shot_features.run(cfg)
    # a replaced source file re-imports
    m0 = sorted(theirs)[1]
    np.save(src / f"{m0}.npy", 2 * theirs[m0])
    assert import_shot_features.run(cfg, str(src)) == 0
    np.testing.assert_allclose(np.asarray(ShotFeatures(run / "shot_features").movie(m0), np.float32),
                               2 * theirs[m0], rtol=2e-3, atol=4e-3)


def test_own_shot_table_is_mapped_by_time(encoded_run, tmp_path):
    from movies2scenes.config import load
    from movies2scenes.features import ShotFeatures
    from movies2scenes.stages import import_shot_features

    run, ov = _copy(encoded_run, tmp_path / "run")
    shots = _shots(run)
    theirs = _their_features(encoded_run, dim=8)
    src = tmp_path / "own"
    src.mkdir()
    want = {}
    for m, x in theirs.items():
        # their detector split every shot in two at a third of its length, and merged shots 0 and 1
        starts, ends, rows = [], [], []
        for i, s in enumerate(shots[m]):
            a, b = s["start_time"], s["end_time"]
            cut = a + (b - a) / 3
            starts += [a, cut]
            ends += [cut, b]
            rows += [x[i], 3 * x[i]]
        want[m] = np.stack([(x[i] * 1 + 3 * x[i] * 2) / 3 for i in range(len(x))])  # duration-weighted
        pq.write_table(pa.table({"start_time": starts, "end_time": ends,
                                 "embedding": [r.tolist() for r in rows]}), src / f"{m}.parquet")
    assert import_shot_features.run(load([ROOT / "configs" / "cpu-tiny.yaml"], ov), str(src)) == 0
    got = ShotFeatures(run / "shot_features")
    for m in theirs:
        np.testing.assert_allclose(np.asarray(got.movie(m), np.float32), want[m], rtol=3e-3, atol=3e-3)


def test_bad_files_name_movie_file_and_row_and_the_rest_is_imported(encoded_run, tmp_path):
    from movies2scenes.features import ShotFeatures

    run, ov = _copy(encoded_run, tmp_path / "run")
    theirs = _their_features(encoded_run)
    movies = sorted(theirs)
    assert len(movies) >= 4
    src = tmp_path / "bad"
    src.mkdir()
    good, short, nan, wide = movies[:4]
    np.save(src / f"{good}.npy", theirs[good])
    np.save(src / f"{short}.npy", theirs[short][:-1])
    x = theirs[nan].copy()
    x[2, 5] = np.nan
    np.save(src / f"{nan}.npy", x)
    np.save(src / f"{wide}.npy", np.zeros((len(theirs[wide]), 7), np.float32))  # another dimension
    np.save(src / "not_a_movie.npy", theirs[good])
    for m in movies[4:]:
        np.save(src / f"{m}.npy", theirs[m])
    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", "import-shot-features", str(src),
                        "-c", str(ROOT / "configs" / "cpu-tiny.yaml"), *ov], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert f"movie '{short}' ({short}.npy): {len(theirs[short]) - 1} rows, but the shots stage has" in out
    assert f"movie '{nan}' ({nan}.npy): row 2 is not finite" in out
    assert f"movie '{wide}' ({wide}.npy): dimension 7, the other movies have 40" in out
    assert "ignored 1 file(s) of movies the shots stage does not hold: not_a_movie.npy" in out
    failures = [json.loads(line) for line in (run / "shot_features" / "failures.jsonl").read_text().splitlines()]
    assert {f["movie_id"] for f in failures} == {short, nan, wide}
    assert ShotFeatures(run / "shot_features").movie_ids == sorted({good, *movies[4:]})  # the rest is imported


def test_wrong_dtypes_and_columns_are_named(tmp_path):
    from movies2scenes.features import FeatureImportError
    from movies2scenes.features import read_source

    shots = [{"start_time": float(i), "end_time": i + 1.0} for i in range(3)]
    np.save(tmp_path / "a.npy", np.ones((3, 4), np.int32))
    with pytest.raises(FeatureImportError, match=r"movie 'a' \(a.npy\): features must be floating point, got dtype int32"):
        read_source(tmp_path / "a.npy", "a", shots)
    pq.write_table(pa.table({"vec": [[1.0]] * 3}), tmp_path / "b.parquet")
    with pytest.raises(FeatureImportError, match=r"movie 'b' \(b.parquet\): no 'embedding' column \(columns: vec\)"):
        read_source(tmp_path / "b.parquet", "b", shots)
    pq.write_table(pa.table({"embedding": [[1, 2]] * 3}), tmp_path / "c.parquet")
    with pytest.raises(FeatureImportError, match="'embedding' must be a list of floats per row, got list<element: int64>"):
        read_source(tmp_path / "c.parquet", "c", shots)
    pq.write_table(pa.table({"embedding": [[1.0, 2.0], [1.0], [3.0, 4.0]]}), tmp_path / "d.parquet")
    with pytest.raises(FeatureImportError, match="row 1 has another length"):
        read_source(tmp_path / "d.parquet", "d", shots)
    pq.write_table(pa.table({"start_time": [0.0, 5.0], "end_time": [1.0, 6.0], "embedding": [[1.0], [2.0]]}),
                   tmp_path / "e.parquet")
    with pytest.raises(FeatureImportError, match=r"our shot 1 \(1.000–2.000 s\) overlaps no row"):
        read_source(tmp_path / "e.parquet", "e", shots)


def test_not_a_folder_is_a_config_error(encoded_run, tmp_path):
    run, ov = _copy(encoded_run, tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", "import-shot-features", str(tmp_path / "nope"),
                        "-c", str(ROOT / "configs" / "cpu-tiny.yaml"), *ov], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "not a folder" in r.stderr
