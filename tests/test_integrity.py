"""Issue 29, class 1: nothing damaged or missing is used. Every file a stage leaves for later stages
is recorded in its DONE.json ([size, sha256]); stages check sizes before they start and hashes when
they first read a file, and refuse naming the file and the command that repairs it; the owning
stage redoes exactly the movies or units whose files differ (sizes on every run, hashes with
``--verify``). Each test damages a finished run the way the adversarial round did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from movies2scenes.cli import main

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "cpu-tiny.yaml")


def _copy(fixture, tmp_path: Path) -> tuple[Path, list[str]]:
    src, overrides = fixture
    run = tmp_path / "run"
    shutil.copytree(src, run)
    return run, ["-c", CONFIG, *(o for o in overrides if not o.startswith("run_dir=")), f"run_dir={run}"]


def _flip(path: Path, where: float = 0.6) -> bytes:
    """Flip one bit of ``path`` in place (same size); the original bytes."""
    data = path.read_bytes()
    i = int(len(data) * where)
    path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])
    return data


def _mtimes(folder: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob(pattern)}


def test_a_flipped_byte_in_a_shot_shard_is_refused_and_verify_redoes_that_movie(encoded_run, tmp_path, capsys):
    run, args = _copy(encoded_run, tmp_path)
    shard = sorted((run / "shots").glob("shots-*.tar"))[1]
    parts_before = _mtimes(run / "shots" / "parts", "*.json")
    original = _flip(shard)
    capsys.readouterr()
    # today's main: exit 0, features of the damaged keyframes; now refused on first read
    assert main(["extract-shot-features", *args, "--force"]) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "m2s detect-shots --verify" in err
    # the size is unchanged: the cheap check says up to date; --verify hashes and redoes that movie only
    assert main(["detect-shots", *args]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["detect-shots", *args, "--verify"]) == 0
    assert str(shard) in capsys.readouterr().err
    assert shard.read_bytes() == original
    changed = {n for n, t in _mtimes(run / "shots" / "parts", "*.json").items() if parts_before[n] != t}
    assert changed == {shard.name.replace("shots-", "").replace(".tar", ".json")}
    assert main(["extract-shot-features", *args]) == 0


def test_a_deleted_shot_shard_is_named_downstream_and_redone_by_detect_shots(encoded_run, tmp_path, capsys):
    run, args = _copy(encoded_run, tmp_path)
    shard = sorted((run / "shots").glob("shots-*.tar"))[0]
    original = shard.read_bytes()
    shard.unlink()
    features_before = _mtimes(run / "shot_features", "*")
    capsys.readouterr()
    # today's main: "up to date" here, and a FileNotFoundError in the next stage that reads shards
    assert main(["extract-shot-features", *args, "--force"]) == 2
    err = capsys.readouterr().err
    assert f"{shard} is missing" in err and "m2s detect-shots --verify" in err
    assert _mtimes(run / "shot_features", "*") == features_before  # refused before anything was touched
    assert main(["detect-shots", *args]) == 0  # the size check notices: only that movie is redone
    assert "is missing; redoing" in capsys.readouterr().err
    assert shard.read_bytes() == original
    assert main(["extract-shot-features", *args]) == 0
    assert "up to date" in capsys.readouterr().out  # the same shard: nothing downstream is redone


def test_a_flipped_byte_in_a_feature_array_is_never_trained_on(encoded_run, tmp_path, capsys):
    run, args = _copy(encoded_run, tmp_path)
    array = sorted((run / "shot_features").glob("features-*.npy"))[-1]
    original = _flip(array, 0.9)  # inside the data, past the .npy header
    capsys.readouterr()
    assert main(["train-movie-encoder", *args, "--force"]) == 2  # today's main: exit 0, other weights
    err = capsys.readouterr().err
    assert str(array) in err and "m2s extract-shot-features --verify" in err
    assert main(["extract-shot-features", *args, "--verify"]) == 0
    assert array.read_bytes() == original


def test_damaged_scene_pair_shards_and_pairs_table_are_refused(mined_run, tmp_path, capsys):
    run, args = _copy(mined_run, tmp_path)
    out = run / "scene_pairs"
    pairs = out / "pairs.parquet"
    original = _flip(pairs, 0.3)
    capsys.readouterr()
    # today's main: a pyarrow error naming no file, or a start shot of 16,711,693
    assert main(["train-scene-encoder", *args]) == 2
    err = capsys.readouterr().err
    assert str(pairs) in err and "m2s mine-scene-pairs --verify" in err
    units_before = _mtimes(out, "scenes-*.tar")
    assert main(["mine-scene-pairs", *args, "--verify"]) == 0  # the units are intact: only the merge runs again
    assert pairs.read_bytes() == original and _mtimes(out, "scenes-*.tar") == units_before

    shard = sorted(out.glob("scenes-*.tar"))[0]
    original = _flip(shard)
    assert main(["train-scene-encoder", *args, "scene_encoder.train.max_steps=2"]) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "m2s mine-scene-pairs --verify" in err
    assert main(["mine-scene-pairs", *args, "--verify"]) == 0
    assert shard.read_bytes() == original


def test_a_damaged_part_record_is_an_item_to_redo(shots_run, small_world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(shots_run, run)
    args = ["-c", CONFIG, f"run_dir={run}", f"catalogue={small_world / 'catalogue.csv'}"]
    part = sorted((run / "shots" / "parts").glob("*.json"))[0]
    part.write_bytes(b"\x00\xff{not json")
    (run / "shots" / "DONE.json").unlink()  # e.g. a run killed before its merge
    before = _mtimes(run / "shots", "shots-*.tar")
    assert main(["detect-shots", *args]) == 0  # today's main: a JSONDecodeError traceback
    after = _mtimes(run / "shots", "shots-*.tar")
    assert {n for n in before if before[n] != after[n]} == {part.stem.join(["shots-", ".tar"])}


def test_the_integrity_bench_runs_at_smoke_size(tmp_path):
    """bench/integrity.py (the cost of these checks at 16k titles, bench/RESULTS.md) cannot rot."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "integrity.json"
    r = subprocess.run([sys.executable, "bench/integrity.py", "--smoke", "--json", str(out)], cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["titles"] == 200 and result["bytes"] > 0
    assert "--verify: every recorded file hashed" in r.stdout


def _legacy(stage_dir: Path) -> None:
    """Make ``stage_dir``'s DONE.json what a movies2scenes older than file records wrote."""
    done = stage_dir / "DONE.json"
    rec = json.loads(done.read_text())
    rec.pop("files")
    done.write_text(json.dumps(rec))


def test_an_old_record_without_files_is_redone_by_verify_and_its_cut_files_refused(encoded_run, tmp_path, capsys):
    """Issue 41 class 2: with a DONE.json older than file records, `--verify` said "up to date"
    while a shard was deleted, and a truncated feature array reached training."""
    import os

    run, args = _copy(encoded_run, tmp_path)
    for stage in ("shots", "shot_features"):
        _legacy(run / stage)
    array = sorted((run / "shot_features").glob("*.npy"))[0]
    os.truncate(array, array.stat().st_size - 64)
    capsys.readouterr()
    assert main(["train-movie-encoder", *args, "--force"]) == 2
    err = capsys.readouterr().err
    assert str(array) in err and "cut short" in err and "m2s extract-shot-features --verify" in err

    shard = sorted((run / "shots").glob("shots-*.tar"))[0]
    original = shard.read_bytes()
    shard.unlink()
    assert main(["detect-shots", *args, "--verify"]) == 0
    assert "written before files were recorded" in capsys.readouterr().err
    assert shard.read_bytes() == original
    assert "files" in json.loads((run / "shots" / "DONE.json").read_text())


def test_a_rerun_upstream_makes_later_stages_stale_to_summary_and_readers(encoded_run, tmp_path, capsys):
    """Issue 42 (3): detect-shots run again with other settings replaced the shots; `m2s summary`
    still showed every later stage "done" and the next stage trained on features of the old shots."""
    run, args = _copy(encoded_run, tmp_path)
    assert main(["detect-shots", *args, "shots.min_shot_frames=3"]) == 0  # other shots than the features'
    capsys.readouterr()
    assert main(["summary", str(run)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    stale = [line for line in out.splitlines() if "STALE" in line]
    assert len(stale) == 3, out  # shot_encoder and shot_features (read shots), movie_encoder (reads them)
    assert "rerun `m2s extract-shot-features`" in out and "rerun `m2s train-movie-encoder`" in out
    assert "shots" in lines and "STALE" not in lines["shots"]
    assert main(["train-movie-encoder", *args, "--force"]) == 2
    err = capsys.readouterr().err
    assert "shot_features is stale" in err and "rerun `m2s extract-shot-features`" in err
