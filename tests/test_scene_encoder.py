"""The scene encoder: SceneViT shapes and timm equivalence, the train-scene-encoder stage (resume,
2 processes vs 1), export round trip (ours and timm's loader), and `m2s embed/index/search`."""

from __future__ import annotations

import json
from dataclasses import asdict
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from movies2scenes.catalogue import safe_name
from movies2scenes.config import ConfigError, ViTConfig, load
from movies2scenes.models.vit import create_scene_vit, create_vit

from helpers import kill_when

ROOT = Path(__file__).resolve().parents[1]
TINY = ViTConfig(arch="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


@pytest.mark.parametrize("n", [1, 4, 9, 16])
@pytest.mark.parametrize("k", [1, 3])
def test_any_number_of_shots_and_frames(n, k):
    torch.manual_seed(0)
    model = create_scene_vit(TINY).eval()
    out = model(torch.randn(2, n, k, 3, 32, 32))
    assert out.shape == (2, 48) and torch.isfinite(out).all()
    assert model.pos_embed(n * k).shape == (1, 1 + 16 * n * k, 48)


def test_one_shot_one_frame_equals_the_plain_timm_vit():
    torch.manual_seed(0)
    model = create_scene_vit(TINY).eval()
    plain = create_vit(TINY).eval()
    plain.load_state_dict(model.vit.state_dict())
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x[:, None, None]), plain(x))
    assert torch.equal(model(x), plain(x))


def test_frames_are_not_interchangeable_and_order_matters():
    torch.manual_seed(0)
    model = create_scene_vit(TINY).eval()
    x = torch.randn(1, 4, 1, 3, 32, 32)
    # positions differ per frame: reversing the shots changes the embedding
    assert not torch.allclose(model(x), model(x.flip(1)), atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = create_scene_vit(TINY).train()
    b = create_scene_vit(TINY, grad_checkpointing=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 1, 3, 32, 32)
    a(x).square().sum().backward()
    b(x).square().sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_bad_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(B, n, k, C, H, W\)"):
        create_scene_vit(TINY)(torch.randn(2, 9, 3, 32, 32))


# ----------------------------------------------------------------------------------------------
# the stage


def _copy(mined_run, dest: Path) -> tuple[Path, list[str]]:
    src, ov = mined_run
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("scene_encoder", "export"))
    return dest, [o for o in ov if not o.startswith("run_dir=")] + [f"run_dir={dest}"]


def _cli(*args, env=None, check=True):
    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", *args], cwd=ROOT, capture_output=True,
                       text=True, env=env)
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_stage_trains_exports_and_reloads(mined_run, tmp_path):
    from movies2scenes import load_scene_encoder
    from movies2scenes.export import load_timm_backbone
    from movies2scenes.stages import export, train_scene_encoder

    run, ov = _copy(mined_run, tmp_path / "run")
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], [*ov, "scene_encoder.train.max_steps=4"])
    assert train_scene_encoder.run(cfg) == 0
    out = run / "scene_encoder"
    done = json.loads((out / "DONE.json").read_text())
    assert done["counts"]["steps"] == 4 and np.isfinite(done["final_loss"])
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert train_scene_encoder.run(cfg) == 0  # a no-op
    assert export.run(cfg) == 0
    exp = run / "export"
    config = json.loads((exp / "movies2scenes.json").read_text())
    assert config["shots_per_scene"] == 3 and config["num_features"] == 48
    assert config["shots"] == {k: v for k, v in asdict(cfg.shots).items() if k != "decode_threads"}
    card = (exp / "README.md").read_text()
    assert "load_scene_encoder" in card and '"scene_pairs"' in card
    encoder = load_scene_encoder(exp)
    trained = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(v, trained[k]) for k, v in encoder.vit.state_dict().items())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(encoder(x), load_timm_backbone(exp)(x))  # timm's own local-dir: loader
    assert encoder(torch.randn(2, 5, 1, 3, 32, 32)).shape == (2, 48)
    _evaluate_small_world(run, ov, tmp_path)
    with pytest.raises(ConfigError, match="needs scene_encoder.model equal"):
        bad = load([ROOT / "configs" / "cpu-tiny.yaml"], [*ov, "scene_encoder.init=shot_encoder",
                                                      "scene_encoder.model.depth=3"])
        train_scene_encoder.run(bad, force=True)


def _evaluate_small_world(run: Path, ov: list[str], tmp_path: Path) -> None:
    """m2s evaluate on hand-made tasks over the small world's ground-truth scenes."""
    import csv

    from movies2scenes.tasks import read_tasks
    from movies2scenes.stages import evaluate

    world = Path(next(o for o in ov if o.startswith("watch_logs=")).split("=", 1)[1]).parent
    truth = list(csv.DictReader(open(world / "ground_truth" / "shots.csv")))
    movies = sorted({r["movie_id"] for r in truth})
    split = dict(zip(movies, ["train", "train", "val", "test"]))
    scenes: dict = {}
    for r in truth:
        scenes.setdefault((r["movie_id"], r["scene"]), []).append(r)
    task = tmp_path / "place.csv"
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "kind", "movie_id", "start_shot", "end_shot", "label", "split"])
        for (m, _), rows in sorted(scenes.items()):
            w.writerow(["place", "classification", m, rows[0]["shot"], int(rows[-1]["shot"]) + 1,
                        rows[0]["place"], split[m]])
            w.writerow(["length", "regression", m, rows[0]["shot"], int(rows[-1]["shot"]) + 1, len(rows), split[m]])
            w.writerow(["long", "binary", m, rows[0]["shot"], int(rows[-1]["shot"]) + 1, int(len(rows) > 4), split[m]])
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], [*ov, f"evaluate.tasks=[{task}]", "evaluate.epochs=5",
                                                   "evaluate.hidden=[16, 8]", "evaluate.repeats=2",
                                                   "evaluate.bootstrap=200", "evaluate.permutations=200"])
    with pytest.raises(ConfigError, match="were seen in pretraining"):  # the leakage guard
        evaluate.run(cfg)
    cfg.evaluate.allow_leakage = True
    assert evaluate.run(cfg) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    place, length = report["tasks"]["place"], report["tasks"]["length"]
    assert place["clips"] == len(scenes) and place["movies"] == 4 and place["metric"] == "top-1"
    assert 0 <= place["encoder"]["linear"] <= 1 and 0 <= place["encoder"]["knn"] <= 1 and "mlp" in place["encoder"]
    assert np.isfinite(length["encoder"]["linear"]) and length["metric"] == "MSE"
    # the baseline (on by default): the same probes, the same folds, on the run's shot features
    # averaged over each clip; the verdict is read from its interval
    from movies2scenes.eval.protocol import Protocol
    from movies2scenes.eval.task import Task
    from movies2scenes.features import ShotFeatures

    vs = place["vs"]["shot_mean"]
    assert vs["low"] <= vs["diff"] <= vs["high"] and 0 < vs["p"] <= 1
    assert vs["verdict"] == ("better" if vs["low"] > 0 else "worse" if vs["high"] < 0 else "tie")
    feats = ShotFeatures(run / "shot_features")
    task_rows = read_tasks([str(task)], {m: feats.num_shots(m) for m in movies})
    place_task = Task.from_rows("place", task_rows["place"])
    mean = np.stack([np.asarray(feats.movie(m)[list(shots)], np.float32).mean(0) for m, shots in place_task.clips])
    protocol = Protocol.from_config(cfg.evaluate)
    again = protocol.result(place_task, protocol.score(place_task, mean))
    assert again == report["tasks"]["place"]["baselines"]["shot_mean"]  # deterministic, and what it says
    assert "shot_mean" in place["shuffled"] and place["shuffled"]["shot_mean"]["gap"]["diff"] == 0  # a mean cannot see order
    page = (run / "eval" / "report.html").read_text()
    assert "place" in page and "curves.png" in page and (run / "eval" / "curves.png").stat().st_size > 1000
    assert "E_shot mean-pooled (baseline)" in page
    mining = sorted(p.name for p in (run / "scene_pairs" / "report").glob("*.png"))
    assert "contact_sheet.png" in mining  # the mining figures are copied into the evaluation report
    for name in mining:
        assert f"mining-{name}" in page and (run / "eval" / f"mining-{name}").read_bytes() == \
            (run / "scene_pairs" / "report" / name).read_bytes()
    # m2s summary shows the verdict per task (issue 30: it printed the encoder's numbers alone) and
    # where the deliverable is and how to use it
    import contextlib
    import io

    from movies2scenes.cli import main
    from movies2scenes.eval_report import task_line

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["summary", str(run)]) == 0
    text = out.getvalue()
    for name in ("place", "length"):
        assert f"{name}: {task_line(report['tasks'][name])}" in text
    assert "CI " in text and "the scene encoder against the mean of its shot features, 3 task(s)" in text
    better = sum(e.get("vs", {}).get("shot_mean", {}).get("verdict") == "better" for e in report["tasks"].values())
    title = "the deliverable — the frozen scene encoder" if better else "the trained scene encoder (not better"
    assert title in text and str(run / "export") in text and "load_scene_encoder" in text


@pytest.mark.slow
def test_init_from_the_shot_encoder(mined_run, tmp_path):
    from movies2scenes.scene_sources import initial_encoder

    run, ov = _copy(mined_run, tmp_path / "run")
    shot = json.loads((run / "shot_encoder" / "movies2scenes.json").read_text())["vit"]
    model_ov = [f"scene_encoder.model.{k}={v}" for k, v in shot.items()]
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], [*ov, *model_ov, "scene_encoder.init=shot_encoder"])
    encoder = initial_encoder(cfg)
    weights = load_file(str(run / "shot_encoder" / "model.safetensors"))
    assert all(torch.equal(v, weights[k]) for k, v in encoder.vit.state_dict().items())


@pytest.mark.slow
def test_resume_after_kill_reproduces_the_weights(mined_run, tmp_path):
    straight, ov = _copy(mined_run, tmp_path / "a")
    killed, ov_k = _copy(mined_run, tmp_path / "b")
    args = ["train-scene-encoder", "-c", "configs/cpu-tiny.yaml", "scene_encoder.train.max_steps=8"]
    _cli(*args, *ov)
    kill_when([*args, *ov_k], ROOT, killed / "scene_encoder" / "checkpoints" / "checkpoint-00000004")
    r = _cli(*args, *ov_k)
    assert "resuming from checkpoint-" in r.stdout
    a = load_file(str(straight / "scene_encoder" / "model.safetensors"))
    b = load_file(str(killed / "scene_encoder" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_processes_follow_one_process(mined_run, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) with global batch 4 vs one process with batch 4: the
    same data, the same queue (keys gathered in rank order), gradients averaged by DDP — the only
    difference is the order of floating-point sums. Tolerance: 1e-4 on every weight and queue entry
    after 3 steps."""
    one, ov1 = _copy(mined_run, tmp_path / "one")
    two, ov2 = _copy(mined_run, tmp_path / "two")
    args = ["train-scene-encoder", "-c", "configs/cpu-tiny.yaml", "scene_encoder.train.max_steps=3",
            "scene_encoder.train.checkpoint_every=3"]
    _cli(*args, *ov1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29500 + os.getpid() % 1000), "-m", "movies2scenes.cli", *args, *ov2],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    (tmp_path / "torchrun.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert json.loads((two / "scene_encoder" / "metrics.json").read_text())["processes"] == 2
    a = load_file(str(one / "scene_encoder" / "model.safetensors"))
    b = load_file(str(two / "scene_encoder" / "model.safetensors"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |weight difference| after 3 steps, 1 vs 2 processes: {worst:.2e}")
    assert worst < 1e-4
    qa = load_file(str(next((one / "scene_encoder" / "checkpoints").glob("checkpoint-*")) / "model.safetensors"))
    qb = load_file(str(next((two / "scene_encoder" / "checkpoints").glob("checkpoint-*")) / "model.safetensors"))
    assert torch.equal(qa["queue_ptr"], qb["queue_ptr"])  # both saw 3 × 4 keys
    assert (qa["queue"] - qb["queue"]).abs().max().item() < 1e-4


def test_missing_pairs_is_a_config_error(tmp_path):
    from movies2scenes.stages import train_scene_encoder

    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], [f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="scene_pairs is not done"):
        train_scene_encoder.run(cfg)


# ----------------------------------------------------------------------------------------------
# embed / index / search


@pytest.mark.slow
def test_embed_index_search_on_bikes(bikes, tmp_path):
    from movies2scenes.export import export_scene_encoder
    from movies2scenes.models.folder import save_vit

    torch.manual_seed(0)
    enc_dir = tmp_path / "enc"
    save_vit(create_scene_vit(TINY).vit, TINY, enc_dir, shots_per_scene=3)
    export_scene_encoder(enc_dir, tmp_path / "export", {"name": "test"})
    out = tmp_path / "emb.parquet"
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    r = _cli("embed", str(bikes), str(bad), "--encoder", str(tmp_path / "export"), "--out", str(out),
             "shots.min_shot_frames=15", "shots.keyframe_size=64")
    assert "4 scenes of 1/2 videos" in r.stdout
    failures = (tmp_path / "emb.parquet.failures.jsonl").read_text()
    assert "broken.mp4" in failures
    rows = pq.read_table(out).to_pylist()
    # bikes.mp4: shots start at 0, 30, 76, 137, 187, 242 → windows of 3 shots, stride 1
    assert [(r["start_shot"], r["end_shot"]) for r in rows] == [(0, 3), (1, 4), (2, 5), (3, 6)]
    assert [r["start_frame"] for r in rows] == [0, 30, 76, 137] and rows[-1]["end_frame"] == 250
    assert rows[1]["start_time"] == pytest.approx(30 / 25) and len(rows[0]["embedding"]) == 48
    _cli("index", str(out), "--out", str(tmp_path / "idx"))
    r = _cli("search", str(tmp_path / "idx"), "--query", str(out), "--at", f"{bikes.name}:8.0", "-k", "2")
    lines = r.stdout.splitlines()
    assert "scene 2" in lines[0] and "left out: the query scene" in lines[0]
    assert all(line.split()[3:5] != ["scene", "2"] for line in lines[1:])  # the query itself is left out
    r = _cli("search", str(tmp_path / "idx"), "--query", str(out), "--at", f"{bikes}:8.0", "-k", "2",
             "--exclude", "none")
    assert r.stdout.splitlines()[1].split()[3:5] == ["scene", "2"]  # unless asked: itself first
    r = _cli("search", str(tmp_path / "idx"), "--query", str(out), "--row", "99", check=False)
    assert r.returncode == 2 and "has 4 rows" in r.stderr


def test_an_evaluation_of_other_tasks_keeps_the_previous_report(tmp_path):
    """Issue 30: `m2s evaluate` with the README's two tasks after `make demo` replaced the three-task
    report silently. The previous report (and its figures) moves to eval/by_tasks/<tasks>/."""
    from movies2scenes.eval_report import keep_previous
    from movies2scenes.store import write_json

    out = tmp_path / "eval"
    out.mkdir()
    write_json(out / "report.json", {"tasks": {"place": {}, "genre": {}, "boundary": {}}})
    (out / "report.html").write_text("three tasks")
    (out / "curves.png").write_bytes(b"png")
    assert keep_previous(out, {"place": {}, "genre": {}, "boundary": {}}) is None  # the same tasks: replaced
    said = keep_previous(out, {"place": {}, "genre": {}})
    kept = out / "by_tasks" / safe_name("boundary+genre+place", 120)
    assert kept.name.startswith("boundary_genre_place-")
    assert said and str(kept) in said
    assert (kept / "report.html").read_text() == "three tasks" and (kept / "curves.png").is_file()
    assert not (out / "report.json").exists()  # the new report is written next


@pytest.mark.parametrize("names", [["../../../x"], ["/abs/olute"], [".."], ["é" * 300], ["a" * 130 + "1", "b"],
                                   ["a" * 130 + "2", "b"]])
def test_a_kept_report_stays_inside_the_run_under_any_task_names(tmp_path, names):
    """Issue 41 class 6: task names are data, never paths — a kept report lands in a bounded, safe
    folder of eval/by_tasks/ (a digest keeps long names apart), and a second keep of the same task
    set never overwrites the first."""
    from movies2scenes.eval_report import keep_previous
    from movies2scenes.store import write_json

    out = tmp_path / "run" / "eval"
    out.mkdir(parents=True)
    (tmp_path / "x").write_text("a user's file")
    kept = []
    for i in range(2):
        write_json(out / "report.json", {"tasks": {n: {} for n in names}})
        (out / "report.html").write_text(f"report {i}")
        said = keep_previous(out, {"other": {}})
        kept.append(Path(said.split(" is kept in ")[1].split(" (")[0]))
    for k, i in zip(kept, range(2)):
        assert k.parent == out / "by_tasks" and len(k.name) <= 130 and (k / "report.html").read_text() == f"report {i}"
    assert kept[0] != kept[1] and (tmp_path / "x").read_text() == "a user's file"


def test_evaluate_adds_its_verdicts_to_the_model_card_it_may_touch(exported_run, tmp_path, capsys):
    """Issue 42 (4): the card held no evaluation (export runs before evaluate) while it listed a
    training batch's acc1 as a result; evaluate now writes its tasks and verdicts into the card
    export wrote — never into one someone edited."""
    from movies2scenes.export import refresh_card

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run)
    card = run / "export" / "README.md"
    assert "Not evaluated yet" in card.read_text()
    entry = {"metric": "top-1", "encoder": {"linear": 0.6}, "baselines": {"shot_mean": {"linear": 0.5}},
             "vs": {"shot_mean": {"metric": "top-1", "verdict": "better", "diff": 0.1, "low": 0.04, "high": 0.16,
                                  "p": 0.01, "half_width": 0.06}}}
    assert "is in the model card" in refresh_card(run / "export", {"place": entry})
    text = card.read_text()
    assert "**place**: scene encoder top-1 0.600" in text and "better (+10.0, CI +4.0..+16.0" in text
    assert "place.top-1" in text.split("---")[1]
    from movies2scenes.cli import main
    assert main(["summary", str(run)]) == 0  # the export's record stays valid and not stale
    assert "STALE" not in capsys.readouterr().out
    card.write_text(text + "\nour note\n")
    assert "edited since export wrote it" in refresh_card(run / "export", {"place": entry})
    assert card.read_text().endswith("our note\n")
