"""The run directory's layout: the stages in pipeline order (each a command and the folder it
writes; declared in :mod:`movies2scenes.pipeline`), and the file every finished stage leaves. The one list the CLI's summary, the export's
pretraining record and the benches read; the Makefile's ``demo`` target is checked against it
(tests/test_import_walls.py)."""

from __future__ import annotations

from pathlib import Path

from .pipeline import PIPELINE

DONE = "DONE.json"


STAGES = PIPELINE  # the stages in pipeline order (pipeline.StageSpec: command, folder, …)
FOLDERS = tuple(s.folder for s in STAGES)
TRAINING_FOLDERS = ("shot_encoder", "movie_encoder", "scene_encoder")  # stages that learn from movies


class RunLayout:
    """Every name of a run directory: the stage folders, their DONE records and the demo world.
    Stages and apps ask it for paths instead of joining ``run_dir / "..."`` themselves."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)

    def folder(self, name: str) -> Path:
        """``run_dir/<name>`` for a stage folder of :data:`FOLDERS`."""
        if name not in FOLDERS:
            raise ValueError(f"{name!r} is not a stage folder ({', '.join(FOLDERS)})")
        return self.root / name

    def done(self, folder: str) -> Path:
        """The DONE record of a stage folder."""
        return self.folder(folder) / DONE

    def is_done(self, folder: str) -> bool:
        """A finished stage left its record (whether it is still current is the stage's check)."""
        return self.done(folder).is_file()

    @property
    def world(self) -> Path:
        """``run_dir/world``: where ``m2s demo-world`` / ``make demo`` put the synthetic world."""
        return self.root / "world"

    @property
    def browse_index(self) -> Path:
        """``run_dir/browse_index``: ``m2s browse``'s scene-index cache (not a stage)."""
        return self.root / "browse_index"

MODEL_FILES = ("model.safetensors", "config.json", "movies2scenes.json", "head.safetensors")  # a trained encoder's final files
