"""The per-item stages on Ray (executor.kind=ray, issue 28), on a local Ray cluster of 2 CPUs:
the same artefacts as the local executor, a worker killed mid-item retried, a bad video recorded
once, and a clear message without the `ray` package."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from movies2scenes.config import load
from testkit.ray_faults import kill_a_busy_worker

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = {"elapsed_s", "finished_at", "decode_seconds"}
pytest.importorskip("ray", reason="the [ray] extra is not installed (make setup installs it)")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=128 * 1024 ** 2)  # parts are small; CI machines have little /dev/shm
    yield ray
    ray.shutdown()


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file of a stage folder; JSON records (parts, DONE.json) without timings."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if not p.is_file() or p.name.startswith(".lock") or "logs" in p.parts:
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            rec = json.loads(data)
            if isinstance(rec, dict):
                data = json.dumps({k: v for k, v in rec.items() if k not in TIMINGS}, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def ray_config(run: Path, overrides: list[str], workers: int = 2):
    return load([ROOT / "configs" / "cpu-tiny.yaml"],
                [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={run}", "executor.kind=ray",
                                                                         f"executor.workers={workers}"])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_detect_shots_on_ray_gives_the_local_artefacts(ray_cluster, shots_run, small_world, tmp_path, workers):
    from movies2scenes.stages import detect_shots

    # one worker replaced after every 2 movies (executor.recycle_after), the other setting untouched
    recycle = ["executor.recycle_after=2"] if workers == 1 else []
    cfg = ray_config(tmp_path / "run", [f"catalogue={small_world / 'catalogue.csv'}", *recycle], workers)
    assert detect_shots.run(cfg) == 0
    assert digest(tmp_path / "run" / "shots") == digest(shots_run / "shots")
    assert detect_shots.run(cfg) == 0  # up to date: a no-op


@pytest.mark.slow
def test_features_and_mining_on_ray_give_the_local_artefacts(ray_cluster, encoded_run, mined_run, tmp_path):
    from movies2scenes.stages import extract_shot_features, mine_scene_pairs

    src, overrides = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("shot_features", "movie_encoder", "movie_pairs"))
    assert extract_shot_features.run(ray_config(run, overrides)) == 0
    assert digest(run / "shot_features") == digest(src / "shot_features")

    mined, mine_overrides = mined_run
    for folder in ("movie_pairs", "movie_encoder"):
        shutil.copytree(src / folder, run / folder)
    assert mine_scene_pairs.run(ray_config(run, mine_overrides)) == 0
    assert digest(run / "scene_pairs") == digest(mined / "scene_pairs")


@pytest.mark.slow
def test_a_catalogue_embedded_on_ray_gives_the_local_files(ray_cluster, exported_run, small_world, tmp_path):
    """m2s embed --catalogue on 2 Ray workers (each loads the encoder once: the stage's copy keeps
    it) writes the single process's bytes, the bad video failed once, not retried."""
    from movies2scenes.apps.catalogue_embed import EmbedCatalogue
    from movies2scenes.config import ExecutorConfig
    from movies2scenes.export import scene_settings
    from test_catalogue_embed import catalogue, digest

    run, _ = exported_run
    cat = catalogue(small_world, tmp_path)
    outs = {}
    for kind in ("local", "ray"):
        cfg = load([], [], base={"shots": scene_settings(run / "export")["shots"]})
        cfg.catalogue, cfg.executor = str(cat), ExecutorConfig(kind=kind, workers=2)
        outs[kind] = tmp_path / kind
        assert EmbedCatalogue(cfg, str(run / "export"), str(outs[kind]), None, 1, 16).run() == 0
    assert digest(outs["ray"]) == digest(outs["local"])
    assert len((outs["ray"] / "failures.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_a_worker_killed_mid_movie_is_replaced_and_the_movie_redone(ray_cluster, shots_run, small_world, tmp_path):
    from movies2scenes.stages import detect_shots

    run = tmp_path / "run"
    killed: list[int] = []
    # the first worker seen busy (waiting for a finished part raced the last movies on busy cores)
    killer = threading.Thread(target=kill_a_busy_worker, args=(run / "shots" / "parts", killed, 0, 120))
    killer.start()
    cfg = ray_config(run, [f"catalogue={small_world / 'catalogue.csv'}"])
    assert detect_shots.run(cfg) == 0
    killer.join()
    assert killed, "no worker was busy to be killed"
    assert digest(run / "shots") == digest(shots_run / "shots")


def test_a_bad_video_is_recorded_once_not_retried(ray_cluster, bikes, tmp_path, capsys):
    from testkit.videos import write_catalogue
    from movies2scenes.stages import detect_shots

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    catalogue = write_catalogue(tmp_path / "cat.csv", [{"movie_id": "good", "video": str(bikes)},
                                                      {"movie_id": "bad", "video": str(bad)}])
    cfg = ray_config(tmp_path / "run", [f"catalogue={catalogue}"])
    assert detect_shots.run(cfg) == 0
    failures = (tmp_path / "run" / "shots" / "failures.jsonl").read_text().splitlines()
    assert [json.loads(line)["movie_id"] for line in failures] == ["bad"]
    assert capsys.readouterr().err.count("bad: FAILED") == 1  # one attempt, no retries


def test_ray_without_the_package_names_the_extra(monkeypatch):
    import sys

    from movies2scenes.config import ConfigError
    from movies2scenes.stages.executors import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"movies2scenes\[ray\]"):
        import_ray()


def test_shard_and_ray_together_are_refused(small_world, tmp_path):
    from movies2scenes.config import ConfigError
    from movies2scenes.stages.detect_shots import DetectShots

    cfg = ray_config(tmp_path / "run", [f"catalogue={small_world / 'catalogue.csv'}"])
    with pytest.raises(ConfigError, match="--shard"):
        DetectShots(cfg, shard="0/2")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_parts_it_wrote(ray_cluster, shots_run, small_world, tmp_path):
    """SIGKILL the `m2s detect-shots --executor ray` process once it has written a part: the rerun
    keeps those parts (not redone) and ends with the local run's artefacts."""
    import sys

    from movies2scenes.stages import detect_shots

    run = tmp_path / "run"
    args = ["detect-shots", "-c", "configs/cpu-tiny.yaml", f"run_dir={run}", f"catalogue={small_world / 'catalogue.csv'}",
            "--executor", "ray", "executor.workers=2"]
    proc = subprocess.Popen([sys.executable, "-m", "movies2scenes.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = run / "shots" / "parts"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (parts.is_dir() and any(parts.glob("*.json"))):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the driver finished before it could be killed"
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.json")}
    assert before and not (run / "shots" / "DONE.json").exists()
    assert detect_shots.run(ray_config(run, [f"catalogue={small_world / 'catalogue.csv'}"])) == 0
    assert {n: (parts / n).stat().st_mtime_ns for n in before} == before  # kept, not redone
    assert digest(run / "shots") == digest(shots_run / "shots")


def test_a_movie_whose_worker_dies_every_time_is_recorded_failed_and_the_others_done(ray_cluster, small_world,
                                                                                       tmp_path, capsys):
    """Issue 41 class 7: the old executor stopped the stage after the deaths with movies never tried."""
    import csv

    from testkit.ray_faults import DoomedDetectShots

    ids = sorted(r["movie_id"] for r in csv.DictReader((small_world / "catalogue.csv").open()))
    cfg = ray_config(tmp_path / "run", [f"catalogue={small_world / 'catalogue.csv'}", "executor.max_retries=1"])
    stage = DoomedDetectShots(cfg)
    stage.doomed = ids[0]
    assert stage.run() == 0
    failures = [json.loads(line) for line in (tmp_path / "run" / "shots" / "failures.jsonl").read_text().splitlines()]
    assert [f["movie_id"] for f in failures] == [ids[0]]
    assert "worker died 2 times" in failures[0]["reason"] and "Actor(" not in failures[0]["reason"]
    done = json.loads((tmp_path / "run" / "shots" / "DONE.json").read_text())
    assert done["counts"]["ok"] == len(ids) - 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_address_where_nothing_answers_fails_in_seconds_without_the_lock(small_world, tmp_path):
    """Issue 41 class 7: Ray retried a dead address for ~14 minutes holding the stage lock, then a
    traceback. Now: exit 2 within the connect timeout, the run folder untouched."""
    import sys

    run = tmp_path / "run"
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", "detect-shots", "-c", "configs/cpu-tiny.yaml",
                        f"run_dir={run}", f"catalogue={small_world / 'catalogue.csv'}", "--executor", "ray",
                        "--ray-address", f"127.0.0.1:{_free_port()}", "executor.connect_timeout_s=2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "no Ray cluster answers at '127.0.0.1:" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - started < 60
    assert not (run / "shots").exists()


def test_a_cluster_recorded_by_ray_start_is_joined_not_started_again(monkeypatch):
    """Issue 41 class 7: with a `ray start` cluster recorded and no address, the old connect passed
    num_cpus to ray.init, which Ray refuses when it joins an existing cluster (a traceback)."""
    import socket

    import ray._private.services as services

    from movies2scenes.config import ExecutorConfig
    from movies2scenes.stages import executors

    calls = []

    class FakeRay:
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kwargs):
            calls.append(kwargs)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        recorded = f"127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.setattr(services, "get_ray_address_from_environment", lambda addr, tmp: recorded)
        monkeypatch.setattr(executors, "import_ray", lambda: FakeRay)
        executors.RayExecutor(ExecutorConfig(kind="ray")).connect()
    assert calls == [{"address": recorded, "log_to_driver": False, "configure_logging": False}]


def test_ray_under_a_launch_of_several_processes_is_refused(small_world, tmp_path, monkeypatch):
    from movies2scenes.config import ConfigError
    from movies2scenes.stages.detect_shots import DetectShots

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = ray_config(tmp_path / "run", [f"catalogue={small_world / 'catalogue.csv'}"])
    with pytest.raises(ConfigError, match="once per process"):
        DetectShots(cfg)
    assert not (tmp_path / "run").exists()


def test_a_ray_address_with_the_local_executor_is_said_to_be_ignored(shots_run, small_world, tmp_path, capsys):
    from movies2scenes.cli import main

    run = tmp_path / "run"
    shutil.copytree(shots_run, run)
    assert main(["detect-shots", "-c", str(ROOT / "configs" / "cpu-tiny.yaml"), f"run_dir={run}",
                 f"catalogue={small_world / 'catalogue.csv'}", "--ray-address", "10.0.0.1:6379"]) == 0
    assert "--ray-address is ignored" in capsys.readouterr().err


def test_a_dead_worker_is_described_in_our_words():
    from movies2scenes.stages.executors import death

    error = RuntimeError("\x1b[36mray::StageWorker.process()\x1b[39m (pid=1, ip=1.2.3.4, actor_id=ab, "
                         "repr=<Actor(StageWorker, 0x)>)\nThe actor died unexpectedly before finishing this task.")
    text = death(error)
    assert text.startswith("RuntimeError: ") and "Actor(" not in text and "\x1b" not in text
