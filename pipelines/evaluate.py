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

import csv
import html
import math
import shutil
import sys
from collections import Counter
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from movies2scenes.catalogue import open_text, utf8_problem
from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.data import eval_transform, to_chw
from movies2scenes.evaluation import (
    MLPProbe,
    ProbeConfig,
    average_precision,
    f1_scores,
    mean_average_precision,
    mse,
    precision_at_k,
    top1,
)
from movies2scenes.features import ShotFeatures, clip_means
from movies2scenes.store import atomic_path, decode_keyframes, file_fingerprint, read_json, write_json

from ._stage import PRETRAINING_FILE, is_done, read_pretraining_movies, stage_input_hash, stage_lock, write_done
from .mine_scene_pairs import ShotSamples

STAGE = "evaluate"
COLUMNS = ["task", "kind", "movie_id", "start_shot", "end_shot", "label", "split"]
KINDS = ("classification", "regression", "multilabel", "binary")


def read_tasks(files: list[str], num_shots: dict[str, int]) -> dict[str, list[dict]]:
    """Task name → rows, validated; every problem is reported as ``file:row: reason``."""
    tasks: dict[str, list[dict]] = {}
    problems: list[str] = []
    for f in files:
        path = Path(f)
        if not path.exists():
            raise ConfigError(f"evaluate.tasks: {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"evaluate.tasks: {path} is not a regular file")
        try:
            _read_task_file(path, num_shots, tasks, problems)
        except UnicodeDecodeError:
            raise ConfigError(utf8_problem(path)) from None
    for name, rows in tasks.items():
        if rows[0]["kind"] == "multilabel" and not any(t for r in rows for t in r["label"].split("|")):
            problems.append(f"task {name!r}: every row has an empty label set (nothing to learn or score)")
    if problems:
        raise ConfigError("bad task rows:\n  " + "\n  ".join(problems))
    return tasks


def _read_task_file(path: Path, num_shots: dict[str, int], tasks: dict[str, list[dict]], problems: list[str]) -> None:
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for r in reader:
            where = f"{path}:{reader.line_num}"
            if None in r.values():
                problems.append(f"{where}: fewer fields than the header has ({len(COLUMNS)} columns expected)")
                continue
            if None in r:
                problems.append(f"{where}: more fields than the header has")
                continue
            try:
                start, end = int(r["start_shot"]), int(r["end_shot"])
            except ValueError:
                problems.append(f"{where}: start_shot/end_shot must be integers")
                continue
            if r["kind"] not in KINDS:
                problems.append(f"{where}: kind {r['kind']!r} is not one of {', '.join(KINDS)}")
            elif r["split"] not in ("train", "val", "test"):
                problems.append(f"{where}: split {r['split']!r} is not train, val or test")
            elif r["movie_id"] not in num_shots:
                problems.append(f"{where}: movie {r['movie_id']!r} has no shots in this run")
            elif not 0 <= start < end <= num_shots[r["movie_id"]]:
                problems.append(f"{where}: shots [{start}, {end}) outside movie {r['movie_id']!r} "
                                f"({num_shots[r['movie_id']]} shots)")
            elif r["kind"] == "regression" and not _is_number(r["label"]):
                problems.append(f"{where}: regression label {r['label']!r} is not a finite number")
            elif r["kind"] == "binary" and r["label"] not in ("0", "1"):
                problems.append(f"{where}: binary label {r['label']!r} is not 0 or 1")
            else:
                rows = tasks.setdefault(r["task"], [])
                if rows and rows[0]["kind"] != r["kind"]:
                    problems.append(f"{where}: task {r['task']!r} mixes kinds {rows[0]['kind']} and {r['kind']}")
                    continue
                rows.append({**r, "start_shot": start, "end_shot": end})


def _is_number(text: str) -> bool:
    """A finite number (NaN/inf labels would make every metric NaN)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


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


@torch.no_grad()
def embed_clips(encoder, shots: ShotSamples, clips: list[tuple[str, int, int]], batch: int) -> np.ndarray:
    """One embedding per (movie, start, end): the clip's keyframes as one scene (n = end − start).
    Movie by movie, each shot is read and transformed once however many clips overlap it; clips of
    equal length are batched together across movies."""
    size = encoder.input_size
    tf = eval_transform(size)
    out: dict[tuple[str, int, int], np.ndarray] = {}
    pending: dict[int, list[tuple[tuple[str, int, int], torch.Tensor]]] = {}

    def flush(length: int) -> None:
        items = pending.pop(length, [])
        if items:
            for (c, _), e in zip(items, encoder(torch.stack([x for _, x in items])).float().numpy()):
                out[c] = e

    by_movie: dict[str, list[tuple[str, int, int]]] = {}
    for c in dict.fromkeys(clips):
        by_movie.setdefault(c[0], []).append(c)
    for movie, movie_clips in by_movie.items():
        samples, views = shots(movie), {}
        for c in movie_clips:
            for t in range(c[1], c[2]):
                if t not in views:
                    views[t] = torch.stack([tf(to_chw(f)) for f in decode_keyframes(samples[t])])
            pending.setdefault(c[2] - c[1], []).append((c, torch.stack([views[t] for t in range(c[1], c[2])])))
            if len(pending[c[2] - c[1]]) == batch:
                flush(c[2] - c[1])
    for length in list(pending):
        flush(length)
    return np.stack([out[c] for c in clips])


def run_task(kind: str, rows: list[dict], emb: np.ndarray, cfg, seed: int = 0) -> dict:
    """One task's probe (trained on the rows' train split, epoch chosen on val) scored on test."""
    split = np.array([r["split"] for r in rows])
    if kind == "classification":
        classes = sorted({r["label"] for r in rows})
        y = np.array([classes.index(r["label"]) for r in rows])
        out_dim = len(classes)
    elif kind == "regression":
        y, out_dim = np.array([float(r["label"]) for r in rows], np.float32), 1
    elif kind == "binary":
        y, out_dim = np.array([[float(r["label"])] for r in rows], np.float32), 1
    else:
        classes = sorted({t for r in rows for t in r["label"].split("|") if t})
        y = np.array([[c in r["label"].split("|") for c in classes] for r in rows], np.float32)
        out_dim = len(classes)
    parts = {s: split == s for s in ("train", "val", "test")}
    counts = {s: int(m.sum()) for s, m in parts.items()}
    if min(counts.values()) == 0:
        return {"kind": kind, "clips": counts, "skipped": "needs clips in each of train, val and test"}
    if kind in ("binary", "multilabel") and not y[parts["test"]].any():
        return {"kind": kind, "clips": counts, "skipped": "the test split has no positive label (AP is undefined)"}
    probe = MLPProbe("multilabel" if kind == "binary" else kind, emb.shape[1], out_dim, ProbeConfig(cfg.hidden, cfg.dropout, cfg.lr, cfg.weight_decay,
                                                            cfg.epochs, cfg.batch_size, seed=seed))
    probe.fit(emb[parts["train"]], y[parts["train"]], emb[parts["val"]], y[parts["val"]])
    pred = probe.predict(emb[parts["test"]])
    res = {"kind": kind, "clips": counts, "best_epoch": probe.best_epoch}
    if kind == "classification":
        res["top1"] = top1(pred, y[parts["test"]])
        res["chance"] = float(np.bincount(y[parts["test"]]).max() / counts["test"])
        res["precision_at_k"] = {str(k): v for k, v in precision_at_k(emb[parts["test"]], y[parts["test"]]).items()}
    elif kind == "regression":
        res["mse"] = mse(pred, y[parts["test"]])
        res["mse_of_mean"] = mse(np.full_like(y[parts["test"]], y[parts["train"]].mean()), y[parts["test"]])
    elif kind == "binary":
        res["ap"] = average_precision(pred[:, 0], y[parts["test"]][:, 0])
        res["positive_rate"] = float(y[parts["test"]].mean())
    else:
        res["map"] = mean_average_precision(pred, y[parts["test"]])
        res["micro_f1"], res["macro_f1"] = f1_scores(pred > 0, y[parts["test"]] > 0.5)
    return res


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


def _n(v, digits: int = 3) -> str:
    """A number for the report; NaN (in memory) or null (from report.json) reads "n/a"."""
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def headline(res: dict) -> str:
    if "skipped" in res:
        return f"skipped ({res['skipped']})"
    if "top1" in res:
        return f"top-1 {_n(res['top1'])} (majority {_n(res['chance'])}), P@1 {_n(res['precision_at_k']['1'])}"
    if "ap" in res:
        return f"AP {_n(res['ap'])} (positive rate {_n(res['positive_rate'])})"
    if "mse" in res:
        return f"MSE {_n(res['mse'], 4)} (predicting the mean {_n(res['mse_of_mean'], 4)})"
    return f"mAP {_n(res['map'])}, micro F1 {_n(res['micro_f1'])}, macro F1 {_n(res['macro_f1'])}"


def clip_counts(clips) -> str:
    """{"train": 40, "val": 8, "test": 16} → "train 40 · val 8 · test 16"."""
    if isinstance(clips, dict):
        return " · ".join(f"{k} {v}" for k, v in clips.items())
    return str(clips)


def write_html(path: Path, report: dict, run_dir: Path) -> None:
    base = report.get("baselines", {}).get("shot_mean")
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(r['kind'])}</td>"
                   f"<td>{html.escape(headline(r))}</td>"
                   + (f"<td>{html.escape(headline(base[n]))}</td>" if base is not None else "")
                   + f"<td>{html.escape(clip_counts(r['clips']))}</td></tr>"
                   for n, r in report["tasks"].items())
    base_th = "<th>E_shot mean-pooled (baseline)</th>" if base is not None else ""
    curves = ""
    try:
        from movies2scenes.report import logged_scalars, training_curves

        found = {s: logged_scalars(run_dir / s / "logs") for s in ("shot_encoder", "movie_encoder", "scene_encoder")
                 if (run_dir / s / "logs").is_dir()}
        found = {s: c for s, c in found.items() if c}
        chance = {}
        for s in found:
            m = read_json(run_dir / s / "metrics.json") if (run_dir / s / "metrics.json").is_file() else {}
            chance[s] = {"acc1": m.get("acc1_chance"), "acc5": m.get("acc5_chance"),
                         "knn_top1": (m.get("knn") or {}).get("chance")}
        if found:
            training_curves(path.parent / "curves.png", found, chance)
            curves = ("<h2>Training curves</h2><p>Each MoCo stage: loss, contrastive accuracy of the positive "
                      "among the queue's negatives, and the kNN monitor (which held-out probe movie a later "
                      "shot or scene comes from); dashed lines are chance. Learning shows as accuracies "
                      "above chance and rising, even while the loss rises as the queue fills.</p>"
                      "<p><img src='curves.png' style='max-width:100%'></p>")
    except Exception as e:  # a picture must never lose the evaluation
        print(f"evaluate: warning: training curves not drawn: {type(e).__name__}: {e}")
    mining = run_dir / "scene_pairs" / "report"
    link = ""
    if (mining / "index.html").is_file():
        figures = []
        for png in sorted(mining.glob("*.png")):  # copied: the evaluation folder stands on its own
            with atomic_path(path.parent / f"mining-{png.name}") as tmp:
                shutil.copyfile(png, tmp)
            figures.append(f"<p><img src='mining-{html.escape(png.name)}' style='max-width:100%'></p>")
        link = ("<h2>Scene-pair mining</h2><p>Adjacency heatmaps (chosen and kept windows) and a contact sheet "
                "of mined pairs; full report: <a href='../scene_pairs/report/index.html'>"
                "scene_pairs/report/index.html</a></p>" + "".join(figures))
    with atomic_path(path) as tmp:
        tmp.write_text("<!doctype html><meta charset='utf-8'><title>movies2scenes evaluation</title>"
                       "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 8px}"
                       "table{border-collapse:collapse}</style><h1>Evaluation of the exported scene encoder</h1>"
                       f"<table><tr><th>task</th><th>kind</th><th>scene encoder (test)</th>{base_th}<th>clips</th></tr>"
                       f"{rows}</table>"
                       + ("<p>The baseline column runs the same probes on the run's shot features averaged over the "
                          "clip's shots: train and deploy the scene encoder where it beats them.</p>" if base is not None else "")
                       + f"{curves}{link}\n", encoding="utf-8")
