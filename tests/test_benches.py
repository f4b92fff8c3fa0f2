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
    out = _bench("bench/browse.py", "--run", str(exported_run[0]), "--requests", "1", "--index-scale", "20", "40",
                 "--windows", "30", "--dim", "8")
    assert "| 40 | 1,200 |" in out and "start-up index part: t ∝ movies^" in out
    assert "| route |" in out and "scene search" in out and "| mined pairs |" in out
    assert "later starts" in out and "read back from browse_index/" in out


def test_scene_pair_quality_bench_smoke(mined_run, small_world):
    out = _bench("bench/scene_pair_quality.py", "--run", str(mined_run[0]), "--world", str(small_world))
    assert "cowatch" in out


def test_shot_detection_bench_smoke():
    out = _bench("bench/shot_detection.py", "--smoke")
    assert "| content +gradual | default |" in out and "| f/s (median) |" in out


def test_executors_bench_smoke():
    out = _bench("bench/executors.py", "--smoke")
    assert "| Ray, 2 workers, longest first |" in out
    assert "artefacts: Ray = round-robin = 1 process: True" in out and "killed run: skipped (--smoke)" in out


def test_schedule_bench_smoke():
    out = _bench("bench/executors.py", "--schedule", "--smoke")
    assert "| Ray, 8 workers, longest first |" in out and "| round-robin (8 × --shard i/8) |" in out
    assert "long-tail (200 titles)" in out


def test_catalogue_embed_bench_smoke(exported_run):
    run, overrides = exported_run
    catalogue = next(o.split("=", 1)[1] for o in overrides if o.startswith("catalogue="))
    out = _bench("bench/catalogue_embed.py", "--export", str(run / "export"), "--catalogue", catalogue)
    assert "| Ray, 2 workers |" in out and "| local, 2 --shard processes |" in out and "Ray ÷ local per core" in out


def test_index_bench_smoke():
    out = _bench("bench/index.py", "--smoke")
    assert "IVF" in out and "recall@10" in out and "growth exponent" in out


def test_index_bench_on_real_windows(encoded_run):
    """--real: the windows of a run's stored shot features, a tenth of the movies held back as queries."""
    out = _bench("bench/index.py", "--real", str(encoded_run[0] / "shot_features"), "--flat-max", "0",
                 "--kinds", "ivfsq8", "flat")
    assert "real " in out and "(means of 9 shots)" in out and "| Flat |" in out and ",SQ8" in out
    flat = next(line for line in out.splitlines() if "| Flat |" in line)
    assert flat.rstrip(" |").endswith("1.000")  # exact search finds exactly the exact neighbours


def test_artefact_digests_bench_smoke(tmp_path):
    import json

    out = _bench("bench/artefact_digests.py", "--smoke", "--processes", "2", "--out", str(tmp_path / "two.json"))
    assert "artefact digests:" in out
    got = json.loads((tmp_path / "two.json").read_text())
    assert set(got) == {"world", "shots", "shot_encoder"} and got["shots"]
    changed = dict(got, shots={**got["shots"], "index.parquet": "0" * 64})  # what a refactor that changed a byte gives
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert "identical" in _bench("bench/artefact_digests.py", "--diff", str(tmp_path / "two.json"), str(tmp_path / "two.json"))
    r = subprocess.run([sys.executable, "bench/artefact_digests.py", "--diff", str(tmp_path / "two.json"),
                        str(tmp_path / "changed.json")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "1 differ" in r.stdout and "shots/index.parquet" in r.stdout, r.stdout + r.stderr


def test_quality_bench_smoke():
    out = _bench("bench/quality.py", "--smoke")
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "E_shot mean (1 seed)" in rows and "pairs: random (1 seed)" in rows, out
    # the A/A rows: the E_shot mean from pixels in fp32 and on another fold draw, each a tie (issue 39)
    for name in ("A/A: E_shot mean from pixels (factorised step 0, fp32) (1 seed)",
                 "A/A: E_shot mean, second fold draw (1 seed)"):
        assert rows[name].count(" tie (") == 3 and "better" not in rows[name] and "worse" not in rows[name], out
    assert "planted: E_shot mean + place label (50 % kept), place only (1 seed)" in rows


def test_gpu_check_cpu_smoke(tmp_path):
    """Issue 31: every CUDA path of bench/gpu_check.py, on CPU at tiny sizes (inductor compile included)."""
    import json

    out = _bench("bench/gpu_check.py", "--cpu-smoke", "--json", str(tmp_path / "check.json"))
    got = {r["name"]: r for r in json.loads((tmp_path / "check.json").read_text())["results"]}
    assert set(got) == {"scene_step", "scene_step_compiled", "shot_step", "shot_step_compiled", "extract", "mining",
                        "faiss", "transnet", "gather", "decode"}
    assert all(r["status"] == "PASS" for r in got.values()), out
    assert got["scene_step"]["figures"]["tflops_per_step"] > 0 and got["mining"]["figures"]["identical"] == 4
    assert "10/10 PASS" in out


def test_decoders_bench_smoke():
    out = _bench("bench/decoders.py", "--smoke")
    assert "| bikes.mp4 |" in out and "auto picks" in out


def test_shot_quality_bench_smoke(encoded_run, small_world):
    out = _bench("bench/shot_quality.py", "--run", str(encoded_run[0]), "--world", str(small_world))
    assert "trained E_shot" in out and "random-init ViT" in out and "raw 8x5 pixels" in out, out
