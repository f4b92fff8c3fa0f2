"""The CI-sized reliability run: every stage is SIGKILLed at a seeded random moment and rerun; its
artefacts must equal an uninterrupted run's byte for byte (bench/reliability.py --tiny)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_stage_survives_a_random_kill(tmp_path):
    r = subprocess.run([sys.executable, "bench/reliability.py", "--tiny", "--seed", "3", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = r.stdout[r.stdout.index("stage "):].splitlines()[1:]
    assert len(table) == 9 and all(" yes" in line for line in table)


# ----------------------------------------------------------------------------------------------
# adversarial findings (issue 12): checkpoints, full disks, concurrent runs, leftovers

import json  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from movies2scenes.cli import main  # noqa: E402

CONFIG = str(ROOT / "configs" / "cpu-tiny.yaml")
FINAL_FILES = ("DONE.json", "model.safetensors", "head.safetensors", "config.json", "movies2scenes.json", "metrics.json",
               "pretraining_movies.json")


def _unfinish(stage_dir: Path) -> None:
    """The state a SIGKILL right after the final checkpoint leaves: no final files, no DONE.json."""
    for name in FINAL_FILES:
        (stage_dir / name).unlink(missing_ok=True)


class _Payload:
    """A pickle that touches ``marker`` when unpickled; with ``genuine``, it then returns the genuine
    object from that file (the stealthy variant: the resume would look normal)."""

    def __init__(self, marker: Path, genuine: Path | None = None):
        self.marker, self.genuine = str(marker), str(genuine) if genuine else None

    def __reduce__(self):
        touch = f"open({self.marker!r}, 'w').close()"
        if self.genuine is None:
            return (exec, (touch,))
        return (eval, (f"exec({touch!r}) or __import__('torch').load({self.genuine!r}, weights_only=False)",))


def _copy_run(src: Path, dest: Path, overrides: list[str]) -> list[str]:
    shutil.copytree(src, dest)
    return [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={dest}"]


def _tamper_every_checkpoint_file(stage: str, folder: str, ov: list[str], run: Path, tmp_path: Path, capsys):
    import torch

    out = run / folder
    before = json.loads((out / "metrics.json").read_text())
    before_done = json.loads((out / "DONE.json").read_text())
    weights = (out / "model.safetensors").read_bytes()
    ckpt = max((p for p in (out / "checkpoints").glob("checkpoint-*")), key=lambda p: p.name)
    pristine = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    args = [stage, "-c", CONFIG, *ov]

    # a kill after the final checkpoint: the resumed run reports the real final loss, same weights
    _unfinish(out)
    assert main(args) == 0, capsys.readouterr().err
    after = json.loads((out / "metrics.json").read_text())
    assert after["final_loss"] == before["final_loss"] and after["final_loss"] == after["final_loss"]  # not NaN
    done = json.loads((out / "DONE.json").read_text())
    assert done.get("final_loss") == before_done.get("final_loss") and done["outputs"] == before_done["outputs"]
    assert (out / "model.safetensors").read_bytes() == weights

    marker = tmp_path / f"{folder}-payload-ran"
    progress = json.loads(pristine["progress.json"])
    genuine = {"custom_checkpoint_0.pkl": dict(progress["scheduler"], lr_lambdas=[None])}
    targets = sorted(n for n in pristine if not n.endswith(".safetensors")) + ["custom_checkpoint_0.pkl"]
    assert {"optimizer.bin", "random_states_0.pkl", "progress.json"} <= set(targets)
    tried = 0
    for name in targets:
        original = tmp_path / f"genuine-{folder}-{name}"
        if name in pristine:
            original.write_bytes(pristine[name])
        else:
            torch.save(genuine[name], original)
        for variant in ("plain", "stealthy"):
            for p in ckpt.iterdir():
                p.unlink()
            for n, data in pristine.items():
                (ckpt / n).write_bytes(data)
            (ckpt / name).write_bytes(pickle.dumps(_Payload(marker, original if variant == "stealthy" else None)))
            _unfinish(out)
            capsys.readouterr()
            rc = main(args)
            err = capsys.readouterr().err
            tried += 1
            assert not marker.exists(), f"{folder}/{name} ({variant}): the payload ran"
            # refused, naming the file, no traceback (custom_checkpoint_*.pkl: never read, still refused)
            assert rc == 2 and name in err and "Traceback" not in err, (name, variant, rc, err)
            assert "tampered" in err
    for p in ckpt.iterdir():
        p.unlink()
    for n, data in pristine.items():
        (ckpt / n).write_bytes(data)
    assert tried == 2 * len(targets)


@pytest.mark.slow
@pytest.mark.parametrize("stage,folder", [("train-shot-encoder", "shot_encoder"),
                                          ("train-movie-encoder", "movie_encoder")])
def test_checkpoint_files_never_run_code_on_resume(stage, folder, encoded_run, tmp_path, capsys):
    src, overrides = encoded_run
    ov = _copy_run(src, tmp_path / "run", overrides)
    _tamper_every_checkpoint_file(stage, folder, ov, tmp_path / "run", tmp_path, capsys)


@pytest.mark.slow
def test_scene_encoder_checkpoint_files_never_run_code_on_resume(mined_run, tmp_path, capsys):
    src, overrides = mined_run
    ov = _copy_run(src, tmp_path / "run", overrides) + ["scene_encoder.train.max_steps=2"]
    assert main(["train-scene-encoder", "-c", CONFIG, *ov]) == 0
    _tamper_every_checkpoint_file("train-scene-encoder", "scene_encoder", ov, tmp_path / "run", tmp_path, capsys)


def _shots_args(world: Path, run: Path, *extra: str) -> list[str]:
    return ["detect-shots", "-c", CONFIG, f"run_dir={run}", f"catalogue={world / 'catalogue.csv'}", *extra]


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "movies2scenes.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kw)


@pytest.mark.slow
def test_a_full_disk_stops_detect_shots_and_the_rerun_continues(small_world, shots_run, tmp_path):
    """Writes beyond RLIMIT_FSIZE fail with EFBIG, as writes to a full disk fail with ENOSPC: an
    error writing *our* shard must stop the stage (no DONE.json, non-zero exit), not be recorded as
    the movie's failure; once space is back the rerun does the rest and equals an uninterrupted run."""
    sizes = sorted(p.stat().st_size for p in (shots_run / "shots").glob("shots-*.tar"))
    limit = sizes[0] + 512
    assert sizes[-1] > limit  # some shards fit, some do not

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = tmp_path / "run"
    r = _cli(_shots_args(small_world, run), preexec_fn=small_disk)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "cannot write" in r.stderr and "File too large" in r.stderr and "Traceback" not in r.stderr
    assert not (run / "shots" / "DONE.json").exists()
    assert not list((run / "shots").glob(".tmp-*"))
    parts = [json.loads(p.read_text()) for p in (run / "shots" / "parts").glob("*.json")]
    assert all(p["status"] == "ok" for p in parts)  # nothing was blamed on a movie
    r = _cli(_shots_args(small_world, run))
    assert r.returncode == 0, r.stderr
    done = json.loads((run / "shots" / "DONE.json").read_text())
    assert done["counts"]["failed"] == 0 and done["counts"]["ok"] == len(sizes)
    for f in ["index.parquet", *(p.name for p in (shots_run / "shots").glob("shots-*.tar"))]:
        assert (run / "shots" / f).read_bytes() == (shots_run / "shots" / f).read_bytes(), f


@pytest.mark.slow
def test_mining_report_that_cannot_be_written_leaves_the_stage_not_done(mined_run, tmp_path, monkeypatch, capsys):
    import errno

    from movies2scenes import report

    src, overrides = mined_run
    ov = _copy_run(src, tmp_path / "run", overrides)
    out = tmp_path / "run" / "scene_pairs"
    for p in [out / "DONE.json", out / "pairs.parquet"]:
        p.unlink()
    shutil.rmtree(out / "report")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "contact_sheet", full)
    assert main(["mine-scene-pairs", "-c", CONFIG, *ov]) == 4
    assert "No space left on device" in capsys.readouterr().err
    assert not (out / "DONE.json").exists() and not (out / "report").exists()
    assert not list(out.glob(".tmp-*"))
    monkeypatch.undo()
    assert main(["mine-scene-pairs", "-c", CONFIG, *ov]) == 0
    assert (out / "DONE.json").is_file() and (out / "report" / "index.html").is_file()
    assert (out / "pairs.parquet").read_bytes() == (src / "scene_pairs" / "pairs.parquet").read_bytes()


_HOLD = """
import sys, time
from pathlib import Path
from movies2scenes.stages.protocol import stage_lock
with stage_lock(Path(sys.argv[1]), sys.argv[2] or None):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(folder: Path, shard: str = "") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), shard], cwd=ROOT, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_stage_lock_one_writer_per_folder_and_no_stale_locks(tmp_path):
    from movies2scenes.stages.protocol import StageLocked, stage_lock

    folder = tmp_path / "shots"
    holder = _holder(folder)
    try:
        with pytest.raises(StageLocked, match=f"pid {holder.pid} on "):
            with stage_lock(folder):
                pass
        with pytest.raises(StageLocked):
            with stage_lock(folder, "1/2"):  # a job-array task beside a single-process run
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder leaves its lock file, not its lock
        holder.wait()
    assert (folder / ".lock").is_file()
    with stage_lock(folder) as lock:
        assert lock.exclusive
    holder = _holder(folder, "0/2")  # the tasks of one job array work side by side ...
    try:
        with stage_lock(folder, "1/2") as lock:
            assert not lock.exclusive
        with pytest.raises(StageLocked, match=f"pid {holder.pid}"):  # ... but never twice on one slot
            with stage_lock(folder, "0/2"):
                pass
        with pytest.raises(StageLocked):
            with stage_lock(folder):
                pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_concurrent_detect_shots_on_one_run_dir(small_world, tmp_path):
    """The second run is refused while the first works; the first completes every movie. The first
    runs TransNetV2 on the CPU (~50 frames/s): seconds of work, so the second's start-up (imports, a
    second or more on busy cores) cannot outlast it — with the content detector the 4 small movies
    were done before the second run looked (seen under load)."""
    run = tmp_path / "run"
    args = _shots_args(small_world, run, "shots.detector=transnetv2")
    first = subprocess.Popen([sys.executable, "-m", "movies2scenes.cli", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "shots" / "parts").is_dir() and time.time() < deadline:
        time.sleep(0.01)
    second = _cli(args)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is being written by pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    done = json.loads((run / "shots" / "DONE.json").read_text())
    assert done["counts"]["ok"] == done["counts"]["movies"] == 4


@pytest.mark.slow
def test_leftover_tmp_files_of_a_killed_run_are_removed(mined_run, tmp_path):
    """What a SIGKILL mid-write leaves (temp files of a dead process) is gone after the rerun."""
    src, overrides = mined_run
    ov = _copy_run(src, tmp_path / "run", overrides)
    run = tmp_path / "run"
    planted = [run / "shot_features" / ".tmp-999999-features-000000.npy",
               run / "shot_features" / "parts" / ".tmp-999999-000000.json",
               run / "scene_pairs" / ".tmp-999999-scenes-000000.tar",
               run / "scene_pairs" / "parts" / ".tmp-999999-000000.json",
               run / "scene_pairs" / ".tmp-999999-report" / "contact_sheet.png"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    for stage, folder in [("extract-shot-features", "shot_features"), ("mine-scene-pairs", "scene_pairs")]:
        (run / folder / "DONE.json").unlink()
        assert main([stage, "-c", CONFIG, *ov]) == 0
        assert not list((run / folder).rglob(".tmp-*")), folder


def test_a_shard_abandoned_on_a_write_error_leaves_no_ignored_exception(tmp_path):
    """EFBIG (a full disk) in the middle of a shard: OutputError, no temp file, and the abandoned
    tar is not flushed later by the garbage collector ("Exception ignored ... write to closed file")."""
    code = f"""
import resource, gc
from movies2scenes.store import OutputError, write_shards
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    write_shards({str(tmp_path / 'x.tar')!r}, ({{"__key__": f"k{{i}}", "bin": bytes(5000)}} for i in range(10)))
except OutputError as e:
    print("OutputError", e)
gc.collect()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "OutputError" in r.stdout, r.stderr[-2000:]
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_an_edited_checkpoint_step_is_refused(encoded_run, tmp_path, capsys):
    """Issue 41 class 5: a checkpoint whose progress.json step was edited forward (to the last
    step, after the real last checkpoint was lost) was believed — an earlier step's weights saved as
    the final model, exit 0. Its folder name and the scheduler's state must agree with the step."""
    src, overrides = encoded_run
    run = tmp_path / "run"
    ov = _copy_run(src, run, overrides)
    shutil.rmtree(run / "movie_encoder")
    ov += ["movie_encoder.train.max_steps=6", "movie_encoder.train.checkpoint_every=2",
           "movie_encoder.train.keep_checkpoints=3"]
    args = ["train-movie-encoder", "-c", CONFIG, *ov]
    assert main(args) == 0
    out = run / "movie_encoder"
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in ckpts] == ["checkpoint-00000002", "checkpoint-00000004", "checkpoint-00000006"]
    shutil.rmtree(ckpts[-1])
    _unfinish(out)
    progress = json.loads((ckpts[1] / "progress.json").read_text())
    (ckpts[1] / "progress.json").write_text(json.dumps(progress | {"step": 6}))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "progress.json: step 6" in err and "its folder name says 4" in err and "Traceback" not in err
    assert not (out / "DONE.json").exists()
