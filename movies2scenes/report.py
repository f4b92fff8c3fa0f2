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
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(6, 6 * max(0.3, min(3.0, a.shape[0] / max(1, a.shape[1])))))
    im = ax.imshow(a, cmap="viridis", interpolation="nearest", aspect="auto")
    for r, (i, j) in enumerate(zip(starts_a, starts_b)):
        keep = r < kept
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), n, n, fill=False, lw=1.6 if keep else 1.0,
                               ls="-" if keep else "--", ec="red" if keep else "white"))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="shot similarity (E_movie fc1)")
    fig.tight_layout()
    _save(fig, path)


def contact_sheet(path: str | Path, rows: list[tuple[np.ndarray, np.ndarray, str]], gap: int = 6) -> None:
    """``rows``: (frames_a (n, H, W, 3), frames_b (n, H, W, 3), label) — one strip per scene pair."""
    plt = _pyplot()
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    strips = []
    for fa, fb, _ in rows:
        h = max(fa.shape[1], fb.shape[1])
        sep = np.full((h, gap * 3, 3), 255, np.uint8)
        strips.append(np.concatenate([_tile(fa, h, gap), sep, _tile(fb, h, gap)], axis=1))
    width = max(s.shape[1] for s in strips)
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(24, width / 40), 1.3 * len(rows) + 0.3),
                             squeeze=False)
    for ax, strip, (_, _, label) in zip(axes[:, 0], strips, rows):
        pad = np.full((strip.shape[0], width - strip.shape[1], 3), 255, np.uint8)
        ax.imshow(np.concatenate([strip, pad], axis=1))
        ax.set_title(label, fontsize=8, loc="left")
        ax.axis("off")
    fig.tight_layout()
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


def training_curves(path: str | Path, curves: dict[str, list[tuple[int, float]]]) -> None:
    """One panel per training stage: its logged loss against the optimizer step."""
    plt = _pyplot()
    if not curves:
        raise ValueError("no training curves to draw")
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (name, points) in zip(axes[0], curves.items()):
        ax.plot([s for s, _ in points], [v for _, v in points], lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    fig.tight_layout()
    _save(fig, path)


def logged_losses(log_dir: str | Path) -> list[tuple[int, float]]:
    """(step, loss) from a stage's TensorBoard logs; a step logged twice (a resumed run) keeps its
    last value, so interrupted and uninterrupted runs give the same curve."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for run in sorted(p for p in Path(log_dir).iterdir() if p.is_dir()):
        acc = EventAccumulator(str(run))
        acc.Reload()
        if "loss" in acc.Tags().get("scalars", []):
            for e in sorted(acc.Scalars("loss"), key=lambda e: e.wall_time):
                points[e.step] = e.value
    return sorted(points.items())
