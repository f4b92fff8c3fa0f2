"""The detect-shots stage end to end: demo-world accuracy, bad inputs, resume, data parallelism."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from movies2scenes.config import ConfigError, load
from movies2scenes.store import decode_keyframes, iter_tar
from movies2scenes.stages import detect_shots

from testkit.videos import make_bad_inputs, write_catalogue

ROOT = Path(__file__).resolve().parents[1]


def _cfg(run_dir, catalogue, *extra):
    return load([ROOT / "configs" / "cpu-tiny.yaml"], [f"run_dir={run_dir}", f"catalogue={catalogue}", *extra])


def _artefacts(run_dir: Path) -> tuple[list, dict]:
    shots = run_dir / "shots"
    index = pq.read_table(shots / "index.parquet").to_pylist()
    hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shots.glob("shots-*.tar"))}
    return index, hashes


def _m2s(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "movies2scenes.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=env, **kw)


def test_demo_world_cuts_and_keyframes(small_world, tmp_path):
    cfg = _cfg(tmp_path / "run", small_world / "catalogue.csv")
    assert detect_shots.run(cfg) == 0
    index = pq.read_table(tmp_path / "run" / "shots" / "index.parquet").to_pylist()
    truth = list(csv.DictReader(open(small_world / "ground_truth" / "shots.csv")))
    found, real = defaultdict(set), defaultdict(set)
    for r in index:
        found[r["movie_id"]].add(r["start_frame"])
    for r in truth:
        real[r["movie_id"]].add(int(r["start_frame"]))
    tp = sum(len(found[m] & real[m]) for m in real)
    precision = tp / sum(len(v) for v in found.values())
    recall = tp / sum(len(v) for v in real.values())
    print(f"demo-world cuts: precision {precision:.3f} recall {recall:.3f}")
    assert precision == 1.0 and recall == 1.0  # the world's cuts are hard by construction

    done = json.loads((tmp_path / "run" / "shots" / "DONE.json").read_text())
    assert done["counts"]["shots"] == len(truth) == len(index)
    assert (tmp_path / "run" / "shots" / "failures.jsonl").read_text() == ""
    # shards: one sample per shot, in index order, keyframes at the configured size
    first = index[0]
    samples = list(iter_tar(tmp_path / "run" / "shots" / first["shard"]))
    rows = [r for r in index if r["shard"] == first["shard"]]
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
    meta = json.loads(samples[3]["json"])
    assert meta["start_frame"] == rows[3]["start_frame"] and meta["fps"] == 12.0
    frames = decode_keyframes(samples[3])
    assert frames.shape == (1, 64, 106, 3) and frames.dtype == np.uint8


def test_bad_inputs_are_recorded_and_others_processed(small_world, tmp_path, bikes):
    bad = make_bad_inputs(tmp_path / "bad", small_world / "videos" / "m0000.mp4")
    rows = [{"movie_id": k, "video": str(v)} for k, v in bad.items()]
    rows.append({"movie_id": "good", "video": str(small_world / "videos" / "m0001.mp4")})
    cat = write_catalogue(tmp_path / "cat.csv", rows)
    cfg = _cfg(tmp_path / "run", cat)
    assert detect_shots.run(cfg) == 0  # some succeeded
    failures = {f["movie_id"]: f["reason"] for f in
                map(json.loads, (tmp_path / "run" / "shots" / "failures.jsonl").read_text().splitlines())}
    assert set(failures) == {"zero", "text", "truncated", "audio", "one_frame", "missing"}
    assert "empty file" in failures["zero"]
    assert "not a readable video" in failures["text"]
    assert "truncated" in failures["truncated"] or "not a readable" in failures["truncated"]
    assert "no video stream" in failures["audio"]
    assert "1 frame(s)" in failures["one_frame"]
    assert "not found" in failures["missing"]
    index = pq.read_table(tmp_path / "run" / "shots" / "index.parquet").to_pylist()
    assert {r["movie_id"] for r in index} == {"weird_path", "good"}  # spaces + non-ASCII path works
    assert detect_shots.run(cfg, strict=True, force=True) == 1  # --strict: any failure fails

    only_bad = write_catalogue(tmp_path / "bad.csv", [r for r in rows if r["movie_id"] in failures])
    assert detect_shots.run(_cfg(tmp_path / "run2", only_bad)) == 1  # all failed


def test_cli_exit_status_and_summary(small_world, tmp_path):
    bad = write_catalogue(tmp_path / "cat.csv", [{"movie_id": "x", "video": "nope.mp4"}])
    r = _m2s("detect-shots", "-c", "configs/cpu-tiny.yaml", f"run_dir={tmp_path / 'r'}", f"catalogue={bad}")
    assert r.returncode == 1 and "1 failed" in r.stdout
    r = _m2s("detect-shots", "-c", "configs/cpu-tiny.yaml", "shots.keyframez=2")
    assert r.returncode == 2 and "shots.keyframez" in r.stderr
    dup = write_catalogue(tmp_path / "dup.csv", [{"movie_id": "x", "video": "a.mp4"}] * 2)
    r = _m2s("detect-shots", "-c", "configs/cpu-tiny.yaml", f"catalogue={dup}")
    assert r.returncode == 2 and "dup.csv:3: duplicate movie_id" in r.stderr


def test_rerun_is_a_noop_and_config_change_redoes(small_world, tmp_path):
    cfg = _cfg(tmp_path / "run", small_world / "catalogue.csv")
    detect_shots.run(cfg)
    done = tmp_path / "run" / "shots" / "DONE.json"
    stamp = done.read_text()
    before = _artefacts(tmp_path / "run")
    assert detect_shots.run(cfg) == 0
    assert done.read_text() == stamp  # untouched
    cfg3 = _cfg(tmp_path / "run", small_world / "catalogue.csv", "shots.keyframes=3")
    assert detect_shots.run(cfg3) == 0
    assert json.loads(done.read_text())["config_hash"] != json.loads(stamp)["config_hash"]
    sample = next(iter_tar(next((tmp_path / "run" / "shots").glob("shots-*.tar"))))
    assert decode_keyframes(sample).shape[0] == 3
    index, _ = _artefacts(tmp_path / "run")
    assert [r["start_frame"] for r in index] == [r["start_frame"] for r in before[0]]


def test_resume_after_kill_gives_identical_artefacts(small_world, tmp_path, bikes):
    rows = [{"movie_id": f"w{i}", "video": str(p)} for i, p in
            enumerate(sorted((small_world / "videos").glob("*.mp4")))]
    rows += [{"movie_id": f"bikes{i}", "video": str(bikes)} for i in range(6)]  # slower movies
    cat = write_catalogue(tmp_path / "cat.csv", rows)
    args = ["-c", "configs/cpu-tiny.yaml", f"catalogue={cat}", "shots.work_size=256"]
    assert _m2s("detect-shots", *args, f"run_dir={tmp_path / 'straight'}").returncode == 0

    killed = tmp_path / "killed"
    parts = killed / "shots" / "parts"
    proc = subprocess.Popen([sys.executable, "-m", "movies2scenes.cli", "detect-shots", *args,
                             f"run_dir={killed}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.json"))) >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "shots" / "DONE.json").exists()
    assert len(list(parts.glob("*.json"))) < len(rows)
    r = _m2s("detect-shots", *args, f"run_dir={killed}")
    assert r.returncode == 0, r.stderr
    assert _artefacts(killed) == _artefacts(tmp_path / "straight")
    assert not list((killed / "shots").glob(".tmp-*"))


def test_job_array_shards_merge_to_the_same_result(small_world, tmp_path):
    cat = small_world / "catalogue.csv"
    detect_shots.run(_cfg(tmp_path / "one", cat))
    cfg = _cfg(tmp_path / "two", cat)
    assert detect_shots.run(cfg, shard="1/2") == 0
    assert not (tmp_path / "two" / "shots" / "DONE.json").exists()  # 0/2 still pending
    assert detect_shots.run(cfg, shard="0/2") == 0  # the last one merges
    assert (tmp_path / "two" / "shots" / "DONE.json").exists()
    assert _artefacts(tmp_path / "two") == _artefacts(tmp_path / "one")
    with pytest.raises(ConfigError, match="0 <= i < n"):
        detect_shots.run(_cfg(tmp_path / "three", cat), shard="2/2")
    with pytest.raises(ConfigError, match="i/n"):
        detect_shots.run(_cfg(tmp_path / "three", cat), shard="half")


def test_two_processes_under_torchrun(small_world, tmp_path):
    """WORLD_SIZE > 1 → Accelerate's process index splits the movies; rank 0 merges."""
    cat = small_world / "catalogue.csv"
    detect_shots.run(_cfg(tmp_path / "one", cat))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29500 + os.getpid() % 1000), "--module", "movies2scenes.cli",
                        "detect-shots", "-c", "configs/cpu-tiny.yaml", f"catalogue={cat}",
                        f"run_dir={tmp_path / 'two'}"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    parts = [json.loads(p.read_text()) for p in (tmp_path / "two" / "shots" / "parts").glob("*.json")]
    assert len(parts) == 4
    assert _artefacts(tmp_path / "two") == _artefacts(tmp_path / "one")


def test_each_detector_keeps_its_own_threshold(tmp_path):
    """Issue 42 (1): `shots.detector=transnetv2` on the demo config thresholded TransNetV2's 0–1
    probabilities at the content detector's 22 and found no cut at all, silently."""
    root = Path(__file__).resolve().parents[1]
    cfg = load([root / "configs" / "demo.yaml"], ["shots.detector=transnetv2"])
    assert cfg.shots.threshold is None  # TransNetV2's own default, not content's 22
    assert load([root / "configs" / "demo.yaml"]).shots.threshold == 22.0
    old = tmp_path / "old.yaml"  # a config of the single key, written for the content detector
    old.write_text("shots:\n  detector: content\n  threshold: 22.0\n")
    assert load([old]).shots.threshold == 22.0
    with pytest.raises(ConfigError, match=r"shots\.thresholds\.transnetv2"):
        load([old], ["shots.detector=transnetv2"])
    with pytest.raises(ConfigError, match=r"shots\.thresholds\.histogram: must be in \(0, 1\]"):
        load([], ["shots.thresholds.histogram=22"])
    # the same threshold named either way is one config hash: finished runs stay done
    from movies2scenes.config import config_hash

    demo = (root / "configs" / "demo.yaml").read_text()
    before = tmp_path / "demo-before.yaml"  # the demo config as it was written before per-detector thresholds
    before.write_text(demo.replace("thresholds: {content: 22.0}", "threshold: 22.0"))
    assert before.read_text() != demo
    assert config_hash(load([before]).shots) == config_hash(load([root / "configs" / "demo.yaml"]).shots)


def test_a_long_video_without_a_cut_earns_a_warning(tmp_path):
    """Issue 42 (1): a movie of more than a minute with zero cuts is said, not taken silently."""
    from testkit.videos import write_video

    frames = [np.full((32, 48, 3), 90 + (i % 3), np.uint8) for i in range(4 * 62)]  # 62 s at 4 fps, one shot
    video = write_video(tmp_path / "still.mp4", frames, fps=4)
    catalogue = write_catalogue(tmp_path / "cat.csv", [{"movie_id": "still", "video": str(video)}])
    cfg = load([], [f"run_dir={tmp_path / 'run'}", f"catalogue={catalogue}", "shots.keyframe_size=32"])
    assert detect_shots.run(cfg) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "shots" / "failures.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["warning"]
    assert "no cut in 62 s" in rows[0]["reason"] and "shots.thresholds.content" in rows[0]["reason"]
