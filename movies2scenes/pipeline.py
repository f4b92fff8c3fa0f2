"""The pipeline, declared once: each stage's command, the folder it writes, the name its DONE record
carries, the folders it reads, and how the command line offers it (its help line, what ``--force``
means, whether it runs per item with ``--shard`` / ``--executor``, an override and an example).

Everything else derives from :data:`PIPELINE`: the run directory's stage order
(:data:`movies2scenes.layout.STAGES`), every stage class's ``spec`` (``STAGE_SPECS[command]``), the
CLI's sub-commands with their help and examples, and the checks on the Makefile and the stage
modules (tests/test_import_walls.py). A stage's module is ``movies2scenes.stages.<command with _>``.
This module imports nothing of the package (the CLI reads it before any stage is imported)."""

from __future__ import annotations

from dataclasses import dataclass

# examples write to their own run folder (runs/try), reading the demo's world: run verbatim, they never
# replace what `make demo` made (issue 42)
EXAMPLE_RUN = "-c configs/demo.yaml run_dir=runs/try catalogue=runs/demo/world/catalogue.csv"


@dataclass(frozen=True)
class StageSpec:
    command: str  # the `m2s` subcommand ("mine-scene-pairs")
    folder: str  # the folder it writes under run_dir ("scene_pairs")
    record: str  # the "stage" of its DONE.json ("mine_scene_pairs")
    needs: tuple[str, ...] = ()  # upstream folders whose DONE records make the input hash
    help: str = ""  # its line in `m2s --help`
    override: str = ""  # a key=value of its own config section, shown in its --help
    examples: tuple[str, ...] = ()  # its example command lines ({run}: EXAMPLE_RUN)
    force: str = ""  # what --force means (a per-item stage: "")
    per_item: bool = False  # a PerItemStage: --shard i/n, --executor, --ray-address
    strict: bool = False  # --strict: any failed movie fails the stage

    @property
    def module(self) -> str:
        """Its module in ``movies2scenes.stages``."""
        return self.command.replace("-", "_")

    @property
    def example(self) -> str:
        return "\n  ".join(e.format(run=EXAMPLE_RUN) for e in self.examples)


RESTART = "start over, discarding checkpoints"
AGAIN = "{} again even if DONE.json matches"

PIPELINE = (
    StageSpec("detect-shots", "shots", "detect_shots", help="stage 1: cut every movie into shots, store keyframes",
              override="shots.keyframes=3", per_item=True, strict=True,
              examples=("m2s detect-shots {run} shots.detector=adaptive",
                        "m2s detect-shots {run} --shard 0/4   (job array task 0 of 4)")),
    StageSpec("train-shot-encoder", "shot_encoder", "train_shot_encoder", needs=("shots",),
              help="stage 2: MoCo shot encoder (neighbour positives)", force=RESTART,
              override="shot_encoder.train.max_steps=200",
              examples=("m2s train-shot-encoder {run} shot_encoder.train.max_steps=200",)),
    StageSpec("extract-shot-features", "shot_features", "extract_shot_features", needs=("shots", "shot_encoder"),
              help="stage 3: frozen E_shot features of every shot", per_item=True,
              override="shot_features.batch_size=256", examples=("m2s extract-shot-features {run}",)),
    StageSpec("build-movie-pairs", "movie_pairs", "build_movie_pairs",
              help="stage 4: similar movie pairs from metadata", force="rebuild even if DONE.json matches",
              override="movie_pairs.per_movie=5",
              examples=("m2s build-movie-pairs {run} watch_logs=runs/demo/world/watch_logs.csv",)),
    StageSpec("train-movie-encoder", "movie_encoder", "train_movie_encoder", needs=("shot_features", "movie_pairs"),
              help="stage 5: movie encoder (similar vs random pairs)", force=RESTART,
              override="movie_encoder.pairs_source=genre",
              examples=("m2s train-movie-encoder {run} movie_encoder.pairs_source=cowatch",)),
    StageSpec("mine-scene-pairs", "scene_pairs", "mine_scene_pairs",
              needs=("shots", "shot_features", "movie_encoder", "movie_pairs"),
              help="stage 6: similar non-overlapping scene pairs + training shards", per_item=True,
              override="scene_pairs.keep_fraction=0.25",
              examples=("m2s mine-scene-pairs {run} scene_pairs.shots_per_scene=9",)),
    StageSpec("train-scene-encoder", "scene_encoder", "train_scene_encoder", needs=("scene_pairs",),
              help="stage 7: MoCo scene encoder on mined scene pairs", force=RESTART,
              override="scene_encoder.train.checkpoint_minutes=15",
              examples=("m2s train-scene-encoder {run} scene_encoder.init=shot_encoder",)),
    StageSpec("export", "export", "export", needs=("scene_encoder",),
              help="stage 8: the frozen scene encoder + model card → run_dir/export", force=AGAIN.format("export"),
              override="export.license=cc-by-4.0", examples=("m2s export {run} export.license=cc-by-4.0",)),
    StageSpec("evaluate", "eval", "evaluate", needs=("export", "shots"),
              help="stage 9: MLP probes on the exported encoder (evaluate.tasks)", force=AGAIN.format("evaluate"),
              override="'evaluate.tasks=[a.csv, b.csv]'",
              examples=("m2s evaluate {run} 'evaluate.tasks=[runs/try/tasks/place.csv, runs/try/tasks/genre.csv]'",)),
)
# outside the pipeline's order: writes shot_features/ from a user's own arrays instead of stage 3
# (downstream stages read it as the shot_features stage it replaces, so its record is stage 3's)
IMPORT_SHOT_FEATURES = StageSpec("import-shot-features", "shot_features", "extract_shot_features", needs=("shots",),
                                 override="shot_features.batch_size=256",
                                 examples=("m2s import-shot-features clip_features/ {run}   "
                                           "(one <movie id>.npy or .parquet per movie)",))
STAGE_SPECS = {s.command: s for s in (*PIPELINE, IMPORT_SHOT_FEATURES)}
# outside a run directory: `m2s embed --catalogue CAT --out DIR` (apps/catalogue_embed.py), a per-item
# stage whose folder is DIR
EMBED_CATALOGUE = StageSpec("embed", "embeddings", "embed_catalogue", per_item=True)
