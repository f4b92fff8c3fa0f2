"""The run directory's layout: the stages in pipeline order (each a command and the folder it
writes), and the file every finished stage leaves. The one list the CLI's summary, the export's
pretraining record and the benches read; the Makefile's ``demo`` target is checked against it
(tests/test_import_walls.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DONE = "DONE.json"


@dataclass(frozen=True)
class StageName:
    command: str  # the `m2s` subcommand
    folder: str  # its folder in the run directory (also its Makefile target)


STAGES = (
    StageName("detect-shots", "shots"),
    StageName("train-shot-encoder", "shot_encoder"),
    StageName("extract-shot-features", "shot_features"),
    StageName("build-movie-pairs", "movie_pairs"),
    StageName("train-movie-encoder", "movie_encoder"),
    StageName("mine-scene-pairs", "scene_pairs"),
    StageName("train-scene-encoder", "scene_encoder"),
    StageName("export", "export"),
    StageName("evaluate", "eval"),
)
FOLDERS = tuple(s.folder for s in STAGES)
TRAINING_FOLDERS = ("shot_encoder", "movie_encoder", "scene_encoder")  # stages that learn from movies


def done_file(run_dir: str | Path, folder: str) -> Path:
    """``run_dir/<folder>/DONE.json``: the record a finished stage leaves."""
    if folder not in FOLDERS:
        raise ValueError(f"{folder!r} is not a stage folder ({', '.join(FOLDERS)})")
    return Path(run_dir) / folder / DONE
