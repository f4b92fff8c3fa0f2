"""Bad inputs of every stage, in one place, as a user meets them: through the ``m2s`` command.

Here: each stage run before its input exists, or on a half-written input (files present, no
DONE.json), is refused with exit code 2 and a message naming the missing file and what to run —
never a traceback, never a half-written input taken for done.

Row-level bad inputs (one bad item among good ones: reported by file/row and reason, the others
still processed) are tested next to each stage:

| stage | bad input | behaviour | test |
|---|---|---|---|
| catalogue | unknown split, missing video, duplicate id, bad genres | ``file:row: reason``, all problems at once | test_catalogue.py |
| config | unknown key, wrong type, value out of range | error names the key (and the file) | test_config.py |
| demo-world | impossible world settings | error names the setting | test_demo_world.py::test_bad_world_config_is_refused |
| detect-shots | unreadable / empty / too-short video among good ones | ``failures.jsonl`` row with the reason, others processed | test_detect_shots_stage.py::test_bad_inputs_are_recorded_and_others_processed |
| shots library | truncated or non-video file | readable error naming the file | test_shots.py::test_unreadable_videos_raise_readable_errors |
| build-movie-pairs | malformed watch log, unknown movie, bad timestamp | ``file:row: reason``; documented skips counted | test_movie_pairs.py::test_bad_metadata |
| mine-scene-pairs | movie pair with an unknown movie or too few shots | skipped with its reason in ``failures.jsonl``, others mined | test_mine_scene_pairs_stage.py::test_bad_movie_pairs_are_skipped_with_a_reason |
| mine-scene-pairs | pair source that was not built | config error naming the file | test_mine_scene_pairs_stage.py::test_missing_source_is_a_config_error |
| mining library | n < 1, keep outside (0, 1], wrong shapes | ValueError naming the parameter | test_mining.py::test_bad_parameters_raise |
| scene encoder | input of the wrong shape | error naming the expected shape | test_scene_encoder.py::test_bad_input_shape_is_a_clear_error |
| evaluate | bad kind / split / label, unknown movie, shots out of range | every bad row as ``file:line: reason`` | test_evaluate.py::test_every_bad_row_is_reported_with_file_and_line |
| evaluate | evaluation movie in the pretraining split | refused (leakage guard) unless overridden | test_evaluate.py |
| embed | unreadable video among good ones | counted as failed with its reason, others embedded | test_scene_encoder.py (embed on bikes.mp4) |
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]

# stage → (the upstream stage it needs first)
NEEDS = {
    "train-shot-encoder": "shots",
    "extract-shot-features": "shots",
    "train-movie-encoder": "shot_features",
    "mine-scene-pairs": "shots",
    "train-scene-encoder": "scene_pairs",
    "export": "scene_encoder",
    "evaluate": "export",
}


def _args(stage: str, run: Path, world: Path, *extra: str) -> list[str]:
    return [stage, "-c", str(ROOT / "configs" / "demo.yaml"), f"run_dir={run}",
            f"catalogue={world / 'catalogue.csv'}", f"watch_logs={world / 'watch_logs.csv'}", *extra]


@pytest.mark.parametrize("stage", sorted(NEEDS))
def test_stage_before_its_input_is_refused_with_what_to_run(stage, small_world, tmp_path, capsys):
    extra = [f"evaluate.tasks=[{tmp_path / 'tasks.csv'}]"] if stage == "evaluate" else []
    if stage == "evaluate":
        (tmp_path / "tasks.csv").write_text("task,kind,movie_id,start_shot,end_shot,label,split\n")
    assert main(_args(stage, tmp_path / "run", small_world, *extra)) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "run" / NEEDS[stage] / "DONE.json"
    assert f"m2s {stage}: error:" in err and str(missing) in err and "run that stage first" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("stage", ["train-shot-encoder", "train-movie-encoder", "train-scene-encoder"])
def test_half_written_input_is_not_taken_for_done(stage, small_world, tmp_path, capsys):
    """A killed upstream stage leaves shards/parts but no DONE.json: the next stage refuses it."""
    upstream = tmp_path / "run" / NEEDS[stage]
    (upstream / "parts").mkdir(parents=True)
    (upstream / "parts" / "000000.json").write_text("{}")
    (upstream / "shard-000000.tar").write_bytes(b"\0" * 1024)
    assert main(_args(stage, tmp_path / "run", small_world)) == 2
    err = capsys.readouterr().err
    assert str(upstream / "DONE.json") in err and "run that stage first" in err


@pytest.mark.parametrize("stage", ["detect-shots", "build-movie-pairs"])
def test_missing_catalogue_is_named(stage, tmp_path, capsys):
    assert main(_args(stage, tmp_path / "run", tmp_path / "nowhere")) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere" / "catalogue.csv") in err and "not found" in err


def test_unknown_stage_option_is_named(small_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(_args("train-shot-encoder", tmp_path / "run", small_world, "--no-such-option"))
    assert e.value.code == 2 and "--no-such-option" in capsys.readouterr().err


def test_bad_override_is_named_before_any_work(small_world, tmp_path, capsys):
    assert main(_args("detect-shots", tmp_path / "run", small_world, "shots.threshold=-3")) == 2
    assert "shots.threshold" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was written
