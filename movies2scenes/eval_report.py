"""The evaluation report: one line per task result (:func:`headline`) and ``report.html`` (the scene
encoder beside the E_shot-mean baseline, training curves, the mining figures)."""

from __future__ import annotations

import html
import math
import shutil
from pathlib import Path

from .catalogue import safe_name
from .layout import RunLayout
from .store import atomic_path, read_json


def _n(v, digits: int = 3) -> str:
    """A number for the report; NaN (in memory) or null (from report.json) reads "n/a"."""
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _points(metric: str, v: float) -> str:
    return f"{v:+.4f}" if metric == "MSE" else f"{100 * v:+.1f}"


BASELINE_NAMES = {"shot_mean": "E_shot mean"}


def comparison_text(c: dict) -> str:
    """"tie (+0.4, CI −0.6..+1.3, p 0.41)" — points for top-1/AP/mAP (× 100), raw for MSE."""
    m = c["metric"]
    return (f"{c['verdict']} ({_points(m, c['diff'])}, CI {_points(m, c['low'])}..{_points(m, c['high'])}, "
            f"p {c['p']:.3f})")


def headline(res: dict, metric: str) -> str:
    """One representation's numbers on one task: the primary probe first, the others beside."""
    digits = 4 if metric == "MSE" else 3
    parts = [f"{metric} {_n(res.get('linear'), digits)}"]
    if "knn" in res:
        parts.append(f"kNN {_n(res['knn'], digits)}")
    if "mlp" in res:
        parts.append(f"MLP {_n(res['mlp'], digits)}")
    if "p_at_1" in res:
        parts.append(f"P@1 {_n(res['p_at_1'])}")
    return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


def task_line(entry: dict) -> str:
    """The scene encoder's number, the E_shot mean's, and the verdict with its interval."""
    if "skipped" in entry:
        return f"skipped ({entry['skipped']})"
    metric = entry["metric"]
    line = f"scene encoder {headline(entry['encoder'], metric)}"
    for name, res in entry.get("baselines", {}).items():
        c = entry["vs"][name]
        label = BASELINE_NAMES.get(name, name)
        line += f" | {label} {headline(res, metric)} → scene encoder {comparison_text(c)}"
    return line


def verdict_counts(report: dict, baseline: str = "shot_mean") -> tuple[dict[str, int], list[float]]:
    """How many tasks the scene encoder is better / tie / worse on against ``baseline`` and the
    intervals' half-widths (in the metric's points): what the instrument could resolve."""
    counts = {"better": 0, "tie": 0, "worse": 0}
    widths = []
    for entry in report.get("tasks", {}).values():
        c = (entry.get("vs") or {}).get(baseline)
        if isinstance(c, dict) and c.get("verdict") in counts:
            counts[c["verdict"]] += 1
            widths.append(c["half_width"] * (1 if c["metric"] == "MSE" else 100))
    return counts, widths


def clip_counts(clips) -> str:
    """{"train": 40, "val": 8, "test": 16} → "train 40 · val 8 · test 16"."""
    if isinstance(clips, dict):
        return " · ".join(f"{k} {v}" for k, v in clips.items())
    return str(clips)


def keep_previous(out: Path, tasks) -> str | None:
    """Before a report of other tasks replaces ``out/report.{json,html}``, move the old pair to
    ``out/by_tasks/<its task names, as a safe name>/`` — a new folder (``-2``, ``-3``, …) when that
    one already keeps a report, so nothing kept is overwritten; returns what was kept, for the user,
    or None (no report, or one of the same tasks)."""
    old = out / "report.json"
    try:
        before = sorted(read_json(old)["tasks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if before == sorted(tasks):
        return None
    base = safe_name("+".join(before), 120, empty="tasks")  # task names are data, never paths
    keep, n = out / "by_tasks" / base, 1
    while (keep / "report.json").exists() or (keep / "report.html").exists():  # kept means never overwritten
        n += 1
        keep = out / "by_tasks" / f"{base}-{n}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.html"):
        if (out / name).is_file():
            (out / name).replace(keep / name)
    for png in out.glob("*.png"):  # the figures its page shows (the new report draws its own)
        shutil.copyfile(png, keep / png.name)
    return f"evaluate: the report of tasks {', '.join(before)} is kept in {keep} (not replaced)"


def write_html(path: Path, report: dict, run_dir: Path) -> None:
    rows = []
    for n, e in report["tasks"].items():
        if "skipped" in e:
            rows.append(f"<tr><td>{html.escape(n)}</td><td>{html.escape(e['kind'])}</td>"
                        f"<td colspan='5'>skipped: {html.escape(e['skipped'])}</td></tr>")
            continue
        base = e.get("baselines", {}).get("shot_mean")
        vs = e.get("vs", {}).get("shot_mean")
        shuffled = e.get("shuffled", {}).get("encoder")
        rows.append(f"<tr><td>{html.escape(n)}</td><td>{html.escape(e['kind'])}</td>"
                    f"<td>{html.escape(headline(e['encoder'], e['metric']))}</td>"
                    f"<td>{html.escape(headline(base, e['metric'])) if base else '—'}</td>"
                    f"<td>{html.escape(comparison_text(vs)) if vs else '—'}</td>"
                    f"<td>{html.escape(comparison_text(shuffled['gap'])) if shuffled else '—'}</td>"
                    f"<td>{e['clips']} clips · {e['movies']} movies · chance {_n(e['chance'])}</td></tr>")
    protocol = report.get("protocol", {})
    method = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in protocol.items())
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
                      "acc1 falling and the loss rising can come from the queue alone and are not a verdict; the kNN "
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
                       "<table><tr><th>task</th><th>kind</th><th>scene encoder</th><th>E_shot mean-pooled (baseline)</th>"
                       "<th>scene encoder vs baseline</th><th>intact vs shuffled shots</th><th>clips</th></tr>"
                       f"{''.join(rows)}</table>"
                       "<p>Numbers are out-of-fold: the primary linear probe first, the cosine kNN, the paper's MLP "
                       "and retrieval P@1 beside it, every representation on the same folds (a movie is never on "
                       "both sides). A verdict is \"better\" or \"worse\" only when the 95 % interval of the "
                       "difference (a bootstrap over movies) excludes 0; the interval's width is what this task "
                       "set can resolve. The baseline is the run's shot features averaged over the clip's shots: "
                       "train and deploy the scene encoder where it is better. \"intact vs shuffled\": the same "
                       "probe with each window's shots shuffled — how much the encoder uses shot order (the mean's "
                       f"gap is 0 by construction).</p><ul>{method}</ul>"
                       + f"{curves}{link}\n", encoding="utf-8")
