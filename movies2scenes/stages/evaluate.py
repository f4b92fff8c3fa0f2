"""Stage evaluate: export + shots + task CSVs → run_dir/eval/ (report.json, report.html).

A task CSV has one clip per row: ``task, kind, movie_id, start_shot, end_shot, label, split`` —
``kind`` is classification (label = class name), regression (label = number), multilabel
(labels ``|``-joined) or binary (label 0/1, scored by average precision — e.g. scene boundaries
from 4-shot windows, or one moderation class); ``split`` is the probe's train / val / test. A clip is shots
[start_shot, end_shot) of a movie of the run's shots stage: its keyframes go through the exported
scene encoder as one scene. Per task an MLP probe (two hidden layers) is trained on train, the
epoch chosen on val, and scored on test: top-1 accuracy, MSE, or mAP + micro/macro F1; for
classification also retrieval precision@1/5/10 by L2 nearest neighbours among the test clips.

**Leakage guard**: a task movie that is in the catalogue's ``train`` split (the pretraining
movies) is an error, unless ``evaluate.allow_leakage: true``. Bad rows (unknown movie, shot range
outside the movie, unknown kind/split, bad number) are errors naming file and row.

The quality table (every representation × pair source × seed on held-out demo-world movies) is
``bench/quality.py`` (``make bench-quality``); it reuses this stage's clip embedding and probes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from movies2scenes.artefacts import ShotSamples
from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.eval_report import keep_previous, task_line, write_html
from movies2scenes.evaluation import embed_clips
from movies2scenes.features import ShotFeatures, clip_means
from movies2scenes.shot_shards import video_prints
from movies2scenes.integrity import read_done, verified
from movies2scenes.store import file_fingerprint, write_json
from movies2scenes.tasks import read_tasks

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, Stage, StageContext
from .protocol import PRETRAINING_FILE, read_pretraining_movies, stage_input_hash

def leakage(tasks: dict[str, list[dict]], export_dir: Path, shots_dir: Path) -> list[str]:
    """Task movies that pretraining learned from, by the export's own record of them
    (``pretraining_movies.json``: every movie any training stage of the run saw) — not by whatever
    catalogue is given now — or whose video is a pretraining movie's under another id (content
    fingerprints recorded by the shots stage). No record is an error, never a reason to skip it."""
    record = export_dir / PRETRAINING_FILE
    if not record.is_file():
        raise ConfigError(f"{record} does not exist: this export has no record of the movies it was pretrained "
                          "on (exported by an older movies2scenes, or a training stage lacked its record), so "
                          "leakage cannot be checked; rerun the training stages and export with --force, or "
                          "set evaluate.allow_leakage=true to evaluate anyway")
    task_movies = {r["movie_id"] for rows in tasks.values() for r in rows}
    seen = read_pretraining_movies(record)
    leaked = {m: "" for m in task_movies & seen}
    # the same film under another id: compare the videos' content fingerprints (the shots stage's)
    prints = video_prints(shots_dir, task_movies | seen)
    by_print = {prints[m]: m for m in sorted(seen, reverse=True) if m in prints}
    for m in sorted(task_movies - seen):
        if prints.get(m) in by_print:
            leaked[m] = f" (the video of pretraining movie {by_print[prints[m]]!r})"
    return [m + why for m, why in sorted(leaked.items())]


class Evaluate(Stage):
    spec = STAGE_SPECS["evaluate"]

    def check(self) -> None:
        if not self.cfg.evaluate.tasks:
            raise ConfigError("evaluate.tasks is empty: give task CSVs (e.g. from `m2s demo-tasks`)")
        # the E_shot-mean baseline needs shot features; without them it is skipped, and says so
        wanted = self.cfg.evaluate.baselines
        self.baselines = [b for b in wanted if b != "shot_mean" or self.run_layout.is_done("shot_features")]
        self.skipped = sorted(set(wanted) - set(self.baselines))

    def upstream(self) -> list[str]:
        return [*self.spec.needs, *(["shot_features"] if "shot_mean" in self.baselines else [])]

    def input_hash(self) -> str:
        return stage_input_hash(*(self.run_layout.done(f) for f in self.upstream()))

    def config_hash(self) -> str:
        ev = self.cfg.evaluate
        return config_hash({"evaluate": asdict(ev), "tasks": [file_fingerprint(f) for f in ev.tasks if Path(f).is_file()]})

    def up_to_date(self, ctx: StageContext) -> int:
        unscored = read_done(ctx.run.done("eval")).get("counts", {}).get("unscored", 0)
        print(f"evaluate: {ctx.out} is up to date (DONE.json matches); nothing to do"
              + (f"; {unscored} task(s) have a non-finite score (see {ctx.out / 'report.json'})" if unscored else ""))
        return 1 if unscored else 0

    def tasks(self, shots_dir: Path, export_dir: Path) -> dict[str, list[dict]]:
        """The task CSVs' rows, checked against the shots stage and the leakage guard."""
        index = pq.read_table(verified(shots_dir / "index.parquet"), columns=["movie_id"]).column("movie_id").to_pylist()
        tasks = read_tasks(self.cfg.evaluate.tasks, Counter(index))
        if not self.cfg.evaluate.allow_leakage:
            leaked = leakage(tasks, export_dir, shots_dir)
            if leaked:
                raise ConfigError(f"{len(leaked)} evaluation movie(s) were seen in pretraining (by "
                                  f"{export_dir / PRETRAINING_FILE}): {', '.join(leaked[:10])}"
                                  f"{' ...' if len(leaked) > 10 else ''} (set evaluate.allow_leakage=true to "
                                  "evaluate anyway)")
        return tasks

    def work(self, ctx: StageContext) -> Finished:
        from movies2scenes.eval.protocol import Protocol, score_task
        from movies2scenes.eval.task import Task
        from movies2scenes.export import load_export, refresh_card

        run, ev, out = ctx.run, self.cfg.evaluate, ctx.out
        export_dir, feat_dir = run.folder("export"), run.folder("shot_features")
        shots = ShotSamples(run.folder("shots"), cache=4)
        tasks = self.tasks(run.folder("shots"), export_dir)
        encoder = load_export(export_dir)
        protocol = Protocol.from_config(ev)
        # relative to the run dir: reports do not depend on where it lies
        report = {"encoder": "export", "protocol": protocol.describe(), "tasks": {}}
        if self.skipped:
            report["baselines_skipped"] = {b: f"{run.done('shot_features')} missing (run extract-shot-features)"
                                           for b in self.skipped}
            print(f"evaluate: warning: baseline(s) {', '.join(self.skipped)} skipped: no shot features in {feat_dir}")
        feats = ShotFeatures(feat_dir) if "shot_mean" in self.baselines else None
        represent = {"encoder": lambda clips: embed_clips(encoder, shots, clips, ev.embed_batch)}
        if feats is not None:
            represent["shot_mean"] = lambda clips: clip_means(feats.movie, clips)
        for name, rows in sorted(tasks.items()):
            entry = score_task(protocol, Task.from_rows(name, rows), represent, ev.shuffle_diagnostic)
            report["tasks"][name] = entry
            print(f"evaluate: {name}: {task_line(entry)}", flush=True)
        kept = keep_previous(out, report["tasks"])  # another task set's report is moved aside, never lost
        write_json(out / "report.json", report)
        write_html(out / "report.html", report, run.root)
        card = refresh_card(export_dir, report["tasks"])  # verdicts in the card, beside the training figures
        # a skipped task says why (too few movies); a NaN/inf metric is an error
        unscored = sorted(n for n, r in report["tasks"].items() if "skipped" not in r
                          and not math.isfinite(r["encoder"]["linear"]))
        done = Finished({"tasks": len(tasks), "unscored": len(unscored)},
                        say=[*([kept] if kept else []), f"evaluate: report → {out / 'report.html'}; {card}"])
        if unscored:
            done.warn.append(f"evaluate: error: {len(unscored)} task(s) have a non-finite score: "
                             f"{', '.join(unscored)} (see the report)")
            done.exit_code = 1
        return done


def run(cfg: Config, force: bool = False) -> int:
    return Evaluate(cfg, force).run()
