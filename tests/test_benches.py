"""Every benchmark has a smoke size that make test runs, so none can rot unnoticed between the
sessions that measure (issue 30: bench/train_step.py's extraction part crashed on id-named shards,
bench/shots.py needed the venv's bin folder on PATH). Numbers are not checked here — they live in
bench/RESULTS.md; what is checked is that each part runs to its report line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> str:
    env = dict(os.environ, PATH="/usr/bin:/bin")  # as `make bench` runs it: the venv's bin not on PATH
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def test_shots_bench_smoke():
    out = _bench("bench/shots.py", "--smoke")
    assert "bikes.mp4: ours" in out and "scenedetect CLI" in out


def test_train_step_bench_smoke(encoded_run):
    out = _bench("bench/train_step.py", "--smoke", "--run", str(encoded_run[0]))
    assert "shot encoder" in out and "scene encoder" in out
    assert "feature extraction over" in out and "ratio" in out  # the part that crashed on `shots-m0000.tar`


def test_mining_bench_smoke(mined_run):
    out = _bench("bench/mining.py", "--smoke", "--run", str(mined_run[0]), "-n", "3")
    assert "mining ÷ matmul" in out and "(identical: True)" in out and "fit t ∝ M^" in out
    assert "[4] demo catalogue" in out  # the whole catalogue of a finished run


def test_browse_bench_smoke(exported_run):
    out = _bench("bench/browse.py", "--run", str(exported_run[0]), "--requests", "1")
    assert "| route |" in out and "scene search" in out and "| mined pairs |" in out


def test_scene_pair_quality_bench_smoke(mined_run, small_world):
    out = _bench("bench/scene_pair_quality.py", "--run", str(mined_run[0]), "--world", str(small_world))
    assert "cowatch" in out
