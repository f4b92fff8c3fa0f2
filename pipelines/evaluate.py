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
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from movies2scenes.artefacts import ShotSamples
from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.eval_report import headline, write_html
from movies2scenes.evaluation import embed_clips, run_task
from movies2scenes.features import ShotFeatures, clip_means
from movies2scenes.store import file_fingerprint, read_json, write_json
from movies2scenes.tasks import read_tasks

from ._stage import PRETRAINING_FILE, is_done, read_pretraining_movies, stage_input_hash, stage_lock, write_done

STAGE = "evaluate"


def leakage(tasks: dict[str, list[dict]], export_dir: Path) -> list[str]:
    """Task movies that pretraining learned from, by the export's own record of them
    (``pretraining_movies.json``: every movie any training stage of the run saw) — not by whatever
    catalogue is given now. No record is an error, never a reason to skip the check."""
    record = export_dir / PRETRAINING_FILE
    if not record.is_file():
        raise ConfigError(f"{record} does not exist: this export has no record of the movies it was pretrained "
                          "on (exported by an older movies2scenes, or a training stage lacked its record), so "
                          "leakage cannot be checked; rerun the training stages and export with --force, or "
                          "set evaluate.allow_leakage=true to evaluate anyway")
    return sorted({r["movie_id"] for rows in tasks.values() for r in rows} & read_pretraining_movies(record))


def run(cfg: Config, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/eval/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "eval") as lock:
        return _run(cfg, force, exclusive=lock.exclusive)


def _run(cfg: Config, force: bool = False, exclusive: bool = True) -> int:
    from movies2scenes.export import load_scene_encoder

    started = time.time()
    run_dir = Path(cfg.run_dir)
    export_dir, shots_dir, out = run_dir / "export", run_dir / "shots", run_dir / "eval"
    ev = cfg.evaluate
    if not ev.tasks:
        raise ConfigError("evaluate.tasks is empty: give task CSVs (e.g. from `m2s demo-tasks`)")
    feat_dir = run_dir / "shot_features"
    baselines = [b for b in ev.baselines if b != "shot_mean" or (feat_dir / "DONE.json").is_file()]
    missing = sorted(set(ev.baselines) - set(baselines))
    input_hash = stage_input_hash(export_dir / "DONE.json", shots_dir / "DONE.json",
                                  *([feat_dir / "DONE.json"] if "shot_mean" in baselines else []))
    chash = config_hash({"evaluate": asdict(ev), "tasks": [file_fingerprint(f) for f in ev.tasks if Path(f).is_file()]})
    if not force and is_done(out, chash, input_hash):
        unscored = read_json(out / "DONE.json").get("counts", {}).get("unscored", 0)
        print(f"evaluate: {out} is up to date (DONE.json matches); nothing to do"
              + (f"; {unscored} task(s) have a non-finite score (see {out / 'report.json'})" if unscored else ""))
        return 1 if unscored else 0
    shots = ShotSamples(shots_dir, cache=4)
    import pyarrow.parquet as pq

    index = pq.read_table(shots_dir / "index.parquet", columns=["movie_id"]).column("movie_id").to_pylist()
    num_shots = Counter(index)
    tasks = read_tasks(ev.tasks, num_shots)
    if not ev.allow_leakage:
        leaked = leakage(tasks, export_dir)
        if leaked:
            raise ConfigError(f"{len(leaked)} evaluation movie(s) were seen in pretraining (by "
                              f"{export_dir / PRETRAINING_FILE}): {', '.join(leaked[:10])}"
                              f"{' ...' if len(leaked) > 10 else ''} (set evaluate.allow_leakage=true to "
                              "evaluate anyway)")
    encoder = load_scene_encoder(export_dir)
    report = {"tasks": {}, "encoder": "export"}  # relative to the run dir: reports do not depend on where it lies
    if baselines or missing:
        report["baselines"] = {b: {} for b in baselines}
    if missing:
        report["baselines_skipped"] = {b: f"{feat_dir / 'DONE.json'} missing (run extract-shot-features)" for b in missing}
        print(f"evaluate: warning: baseline(s) {', '.join(missing)} skipped: no shot features in {feat_dir}")
    feats = ShotFeatures(feat_dir) if "shot_mean" in baselines else None
    for name, rows in sorted(tasks.items()):
        clips = [(r["movie_id"], r["start_shot"], r["end_shot"]) for r in rows]
        emb = embed_clips(encoder, shots, clips, ev.embed_batch)
        report["tasks"][name] = run_task(rows[0]["kind"], rows, emb, ev)
        line = f"evaluate: {name}: {headline(report['tasks'][name])}"
        if feats is not None:
            mean = clip_means(feats.movie, clips)
            report["baselines"]["shot_mean"][name] = run_task(rows[0]["kind"], rows, mean, ev)
            line += f"  | E_shot mean: {headline(report['baselines']['shot_mean'][name])}"
        print(line)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    write_html(out / "report.html", report, run_dir)
    # a skipped task says why (too few clips, no positive in test); a NaN/inf metric is an error
    unscored = sorted(n for n, r in report["tasks"].items()
                      if any(isinstance(v, float) and not math.isfinite(v) for v in r.values()))
    write_done(out, STAGE, chash, input_hash, {"tasks": len(tasks), "unscored": len(unscored)}, started)
    print(f"evaluate: report → {out / 'report.html'}")
    if unscored:
        print(f"evaluate: error: {len(unscored)} task(s) have a non-finite score: {', '.join(unscored)} (see "
              "the report)", file=sys.stderr)
        return 1
    return 0


