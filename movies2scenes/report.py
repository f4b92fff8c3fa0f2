"""Figures and small HTML pages (matplotlib, Agg backend: no display needed).

* ``adjacency_figure`` — a movie pair's shot adjacency A with the chosen scene pairs drawn as n × n
  squares (kept ones solid, chosen-but-dropped ones dashed), as in the paper's mining figure.
* ``contact_sheet`` — top scene pairs, the keyframes of scene a then scene b side by side, one row
  per pair (the paper's supplementary Figure 1).
* ``write_html`` — a page of titled figures and tables.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .store import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def adjacency_figure(path: str | Path, a: np.ndarray, starts_a, starts_b, kept: int, n: int,
                     title: str, xlabel: str, ylabel: str) -> None:
    """Heatmap of ``a`` (M × N) with the chosen windows; the first ``kept`` are the kept ones."""
    _save(_adjacency(a, starts_a, starts_b, kept, n, title, xlabel, ylabel), path)


def adjacency_png(a: np.ndarray, starts_a, starts_b, n: int, max_px: int = 640) -> tuple[bytes, dict]:
    """A fast raster of the shot adjacency ``a`` (M × N) for a web page: viridis colours, each
    cell a square of equal pixels, the windows (``starts_a[i]``, ``starts_b[i]``) of n × n shots
    outlined in red; PNG bytes (OpenCV; no matplotlib figure, ~100× faster) and the legend
    (cell size, value range) for the page to print beside it."""
    import cv2
    from matplotlib import colormaps

    a = np.asarray(a, np.float32)
    lo, hi = float(a.min()), float(a.max())
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    idx = np.round((a - lo) / max(hi - lo, 1e-12) * 255).astype(np.int64)
    cell = int(max(1, min(12, max_px // max(a.shape))))
    img = np.ascontiguousarray(np.repeat(np.repeat(lut[idx], cell, 0), cell, 1)[:, :, ::-1])  # BGR for OpenCV
    for i, j in zip(starts_a, starts_b):
        cv2.rectangle(img, (int(j) * cell, int(i) * cell), ((int(j) + n) * cell - 1, (int(i) + n) * cell - 1),
                      (0, 0, 255), max(1, cell // 4))
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return png.tobytes(), {"cell_px": cell, "min": lo, "max": hi, "rows": a.shape[0], "cols": a.shape[1]}


def _adjacency(a, starts_a, starts_b, kept, n, title, xlabel, ylabel):
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    # constrained layout keeps every label inside the figure at any aspect (issue 42: a clipped
    # colour-bar label and a footnote over the tick labels on non-square heatmaps)
    fig, ax = plt.subplots(figsize=(6.4, 1.6 + 5 * max(0.3, min(3.0, a.shape[0] / max(1, a.shape[1])))),
                           layout="constrained")
    im = ax.imshow(a, cmap="viridis", interpolation="nearest", aspect="auto")
    for r, (i, j) in enumerate(zip(starts_a, starts_b)):
        keep = r < kept
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), n, n, fill=False, lw=1.6 if keep else 1.0,
                               ls="-" if keep else "--", ec="red" if keep else "white"))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("shot similarity (E_movie dot product;\nunbounded, higher = more alike)", fontsize=8)
    fig.supxlabel("red box: kept scene pair · white dashed: chosen, dropped by keep_fraction", fontsize=7)
    return fig


def contact_sheet(path: str | Path, rows: list[tuple[np.ndarray, np.ndarray, str]], gap: int = 6,
                  width_px: int = 1400) -> None:
    """``rows``: (frames_a (n, H, W, 3), frames_b (n, H, W, 3), label) — one strip per scene pair,
    scene a's keyframes, a white bar, scene b's. The sheet is drawn at ``width_px`` pixels (strips
    scaled to fit, 1 image pixel = 1 screen pixel) so captions stay readable at 100 % zoom."""
    import cv2

    plt = _pyplot()
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    strips = []
    for fa, fb, _ in rows:
        h = max(fa.shape[1], fb.shape[1])
        sep = np.full((h, gap * 3, 3), 255, np.uint8)
        strips.append(np.concatenate([_tile(fa, h, gap), sep, _tile(fb, h, gap)], axis=1))
    widest = max(s.shape[1] for s in strips)
    scale = width_px / widest
    strips = [cv2.resize(s, (max(1, round(s.shape[1] * scale)), max(1, round(s.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR) for s in strips]
    dpi, caption_px, margin = 100, 26, 10
    heights = [s.shape[0] + caption_px for s in strips]
    fig = plt.figure(figsize=((width_px + 2 * margin) / dpi, (sum(heights) + margin) / dpi), dpi=dpi)
    total_h, top = sum(heights) + margin, margin / 2
    for strip, h, (_, _, label) in zip(strips, heights, rows):
        # axes in figure fractions, placed in pixels: the caption above, then the strip at 1:1
        ax = fig.add_axes([margin / (width_px + 2 * margin), 1 - (top + h) / total_h,
                           strip.shape[1] / (width_px + 2 * margin), strip.shape[0] / total_h])
        ax.imshow(strip, interpolation="nearest")
        ax.set_title(label, fontsize=11, loc="left", pad=4)
        ax.axis("off")
        top += h
    _save(fig, path)


def _tile(frames: np.ndarray, h: int, gap: int) -> np.ndarray:
    cells = []
    for f in frames:
        f = np.pad(f, ((0, h - f.shape[0]), (0, 0), (0, 0)), constant_values=255)
        cells += [f, np.full((h, gap, 3), 255, np.uint8)]
    return np.concatenate(cells[:-1], axis=1)


def _save(fig, path: str | Path) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def write_html(path: str | Path, title: str, sections: list[tuple[str, str | list[str], list[dict] | None]]) -> None:
    """``sections``: (heading, image file name(s) relative to the page, optional table rows)."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%;border:1px solid #ccc}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, images, table in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for img in [images] if isinstance(images, str) else images:
            parts.append(f"<p><img src='{html.escape(img)}' alt='{html.escape(heading)}'></p>")
        if table:
            cols = list(table[0])
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
            for row in table:
                parts.append("<tr>" + "".join(f"<td>{html.escape(_fmt(row[c]))}</td>" for c in cols) + "</tr>")
            parts.append("</table>")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts) + "\n", encoding="utf-8")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


PANELS = (
    ("loss", ("loss",), "loss", "InfoNCE / BCE loss. A MoCo loss can rise while its queue fills with\n"
     "better keys: read it with the accuracies."),
    ("contrastive", ("acc1", "acc5"), "accuracy", "Positive ranked 1st / in top 5 of the 1 + K logits\n"
     "(moco's own monitor). Dashed: chance k / (1 + K)."),
    ("knn", ("knn_top1",), "top-1", "kNN: which probe movie a later shot/scene comes from\n"
     "(held-out movies). Dashed: chance (majority movie)."),
)


def training_curves(path: str | Path, stages: dict[str, dict[str, list[tuple[int, float]]]],
                    chance: dict[str, dict[str, float]] | None = None) -> None:
    """One row per training stage: its loss, the contrastive accuracy (acc1/acc5) and the kNN
    monitor, each against the optimizer step, chance levels dashed; a panel a stage did not log
    is left out. ``stages``: stage → tag → [(step, value)]; ``chance``: stage → tag → level."""
    plt = _pyplot()
    if not stages:
        raise ValueError("no training curves to draw")
    chance = chance or {}
    fig, axes = plt.subplots(len(stages), len(PANELS), figsize=(4.2 * len(PANELS), 3.0 * len(stages) + 0.6),
                             squeeze=False)
    for row, (stage, curves) in zip(axes, stages.items()):
        for ax, (panel, tags, ylabel, note) in zip(row, PANELS):
            drawn = [t for t in tags if curves.get(t)]
            if not drawn:
                ax.axis("off")
                continue
            for tag in drawn:
                pts = curves[tag]
                line, = ax.plot([p for p, _ in pts], [v for _, v in pts], lw=1.3, label=tag,
                                marker="o" if len(pts) < 12 else None, ms=3)
                level = chance.get(stage, {}).get(tag)
                if level is not None and level == level:
                    ax.axhline(level, ls="--", lw=1, color=line.get_color(), label=f"{tag} chance {level:.3g}")
            if panel != "loss":
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{stage}: {panel}", fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7, loc="best")
            ax.text(0.0, -0.32, note, transform=ax.transAxes, fontsize=7, va="top", color="#444")
    fig.tight_layout()
    _save(fig, path)


def logged_scalars(log_dir: str | Path, tags=("loss", "acc1", "acc5", "knn_top1")) -> dict[str, list[tuple[int, float]]]:
    """tag → [(step, value)] from a stage's TensorBoard logs; a step logged twice (a resumed run)
    keeps its last value, so interrupted and uninterrupted runs give the same curve."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, dict[int, float]] = {t: {} for t in tags}
    for run in sorted(p for p in Path(log_dir).iterdir() if p.is_dir()):
        acc = EventAccumulator(str(run))
        acc.Reload()
        have = acc.Tags().get("scalars", [])
        for tag in tags:
            if tag in have:
                for e in sorted(acc.Scalars(tag), key=lambda e: e.wall_time):
                    points[tag][e.step] = e.value
    return {t: sorted(p.items()) for t, p in points.items() if p}
