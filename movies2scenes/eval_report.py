"""The evaluation report: one line per task result (:func:`headline`) and ``report.html`` (the scene
encoder beside the E_shot-mean baseline, training curves, the mining figures)."""

from __future__ import annotations

import html
import math
import shutil
from pathlib import Path

from .layout import RunLayout
from .store import atomic_path, read_json


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


def primary(res: dict) -> tuple[str, float, bool] | None:
    """A task result's main number: (name, value, higher is better), or None (skipped, not finite)."""
    import math

    for key, name, higher in (("top1", "top-1", True), ("ap", "AP", True), ("map", "mAP", True),
                              ("mse", "MSE", False)):
        value = res.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return name, float(value), higher
    return None


def compare(encoder: dict, baseline: dict | None) -> tuple[str, float] | None:
    """Which is better on the task's main number — "scene encoder better", "BASELINE BETTER" or
    "tie" (within 0.005) — and the encoder's number minus the baseline's; None when either lacks one."""
    mine, theirs = primary(encoder), primary(baseline) if baseline else None
    if mine is None or theirs is None:
        return None
    diff = mine[1] - theirs[1]
    better = diff if mine[2] else -diff
    return ("tie" if abs(better) < 0.005 else "scene encoder better" if better > 0 else "BASELINE BETTER"), diff


def verdict(encoder: dict, baseline: dict | None) -> str:
    """One line per task: the encoder's main number against the E_shot-mean baseline's, and which
    is better."""
    mine = primary(encoder)
    if mine is None:
        return headline(encoder)
    line = f"scene encoder {mine[0]} {mine[1]:.3f}"
    result = compare(encoder, baseline)
    if result is None:
        return line + " (no baseline)"
    return f"{line} vs E_shot mean {primary(baseline)[1]:.3f} → {result[0]} ({result[1]:+.3f})"


def _cell(result: tuple[str, float] | None) -> str:
    return f"{result[0]} ({result[1]:+.3f})" if result else "—"


def clip_counts(clips) -> str:
    """{"train": 40, "val": 8, "test": 16} → "train 40 · val 8 · test 16"."""
    if isinstance(clips, dict):
        return " · ".join(f"{k} {v}" for k, v in clips.items())
    return str(clips)


def keep_previous(out: Path, tasks) -> str | None:
    """Before a report of other tasks replaces ``out/report.{json,html}``, move the old pair to
    ``out/by_tasks/<its task names>/`` (a later run of those tasks replaces only its own); returns
    what was kept, for the user, or None (no report, or one of the same tasks)."""
    old = out / "report.json"
    try:
        before = sorted(read_json(old)["tasks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if before == sorted(tasks):
        return None
    keep = out / "by_tasks" / "+".join(before)[:120]
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.html"):
        if (out / name).is_file():
            (out / name).replace(keep / name)
    for png in out.glob("*.png"):  # the figures its page shows (the new report draws its own)
        shutil.copyfile(png, keep / png.name)
    return f"evaluate: the report of tasks {', '.join(before)} is kept in {keep} (not replaced)"


def write_html(path: Path, report: dict, run_dir: Path) -> None:
    base = report.get("baselines", {}).get("shot_mean")
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(r['kind'])}</td>"
                   f"<td>{html.escape(headline(r))}</td>"
                   + (f"<td>{html.escape(headline(base[n]))}</td><td>{html.escape(_cell(compare(r, base.get(n))))}</td>"
                      if base is not None else "")
                   + f"<td>{html.escape(clip_counts(r['clips']))}</td></tr>"
                   for n, r in report["tasks"].items())
    base_th = "<th>E_shot mean-pooled (baseline)</th><th>verdict</th>" if base is not None else ""
    curves = ""
    try:
        from .report import logged_scalars, training_curves

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
                      "shot or scene comes from); dashed lines are chance. The contrastive accuracy and loss "
                      "are measured against a queue that fills with harder negatives as training goes on, so "
                      "acc1 falling and the loss rising are expected early and are not a verdict; the kNN "
                      "curve (held-out movies) and the table above are. If the kNN curve stays at chance, the "
                      "encoder did not learn what tells movies apart.</p>"
                      "<p><img src='curves.png' style='max-width:100%'></p>")
    except Exception as e:  # a picture must never lose the evaluation
        print(f"evaluate: warning: training curves not drawn: {type(e).__name__}: {e}")
    mining = RunLayout(run_dir).folder("scene_pairs") / "report"
    link = ""
    if (mining / "index.html").is_file():
        figures = []
        for png in sorted(mining.glob("*.png")):  # copied: the evaluation folder stands on its own
            with atomic_path(path.parent / f"mining-{png.name}") as tmp:
                shutil.copyfile(png, tmp)
            figures.append(f"<p><img src='mining-{html.escape(png.name)}' style='max-width:100%'></p>")
        link = ("<h2>Scene-pair mining</h2><p>Adjacency heatmaps — colour: the dot product of two movies' E_movie "
                "shot embeddings (unbounded, higher = more alike); red boxes: kept scene pairs, white dashed: chosen "
                "but dropped by keep_fraction — and a contact sheet "
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
