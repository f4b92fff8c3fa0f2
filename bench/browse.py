"""`m2s browse` latency on a run directory (the demo run by default): the app is served by uvicorn in
this process and every route is requested over real HTTP (http.client, one connection per request),
N times each after one warm-up request; p50 / p95 / max per route. Start-up is timed separately:
the first start (the run's browse_index/ removed: every window embedded), a later start (read back
from browse_index/), and the run's tables alone (when `m2s browse` serves its first page). ``--screenshots DIR`` also saves the main pages as
JPEG through Debian's chromium (Playwright) — the images in docs/.

    python bench/browse.py [--run runs/demo] [--requests 50] [--screenshots docs]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def get(port: int, path: str) -> tuple[int, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status, time.perf_counter() - t


def routes(view) -> dict[str, list[str]]:
    """A few paths of each kind, chosen with a seeded generator from the run itself."""
    rng = np.random.default_rng(0)
    movies = [m for m in sorted(view.shots) if view.shots[m]]
    pick = [movies[i] for i in rng.choice(len(movies), min(5, len(movies)), replace=False)]
    out = {"catalogue": ["/", "/?page=2", "/?q=the"], "movie": [f"/movie/{m}" for m in pick],
           "keyframe": [f"/keyframe/{m}/{int(rng.integers(len(view.shots[m])))}/0.jpg" for m in pick]}
    if view.encoder is not None:
        out["scene search"] = [f"/search?movie={m}&start={int(rng.integers(len(view.shots[m])))}" for m in pick]
    if view.pairs:
        groups = view.movie_pairs()
        out["mined pairs"] = ["/pairs"] + [f"/pairs/{g['a']}/{g['b']}" for g in groups[:3]]
        out["adjacency heatmap"] = [f"/pairs/{g['a']}/{g['b']}/adjacency.png" for g in groups[:3]]
    return out


def screenshots(port: int, view, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from testkit.web import ALL_IMAGES_LOADED

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    base = f"http://127.0.0.1:{port}"
    movie = sorted(view.shots)[3]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        for name, path in [("catalogue", "/"), ("movie", f"/movie/{movie}"),
                           ("search", f"/search?movie={movie}&start=9&k=5"), ("pairs", None)]:
            if path is None:
                g = view.movie_pairs()[0]
                path = f"/pairs/{g['a']}/{g['b']}"
            page.goto(base + path)
            page.evaluate(ALL_IMAGES_LOADED)
            page.screenshot(path=str(out / f"browse-{name}.jpg"), type="jpeg", quality=80)
            print(f"browse: screenshot {out / f'browse-{name}.jpg'}")
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--screenshots", metavar="DIR")
    args = ap.parse_args()
    from testkit.web import Server

    from movies2scenes.apps.browse import RunView, make_app

    shutil.rmtree(Path(args.run) / "browse_index", ignore_errors=True)  # browse's own cache: a cold start
    t = time.perf_counter()
    RunView(args.run)  # every window embedded, kept in RUN/browse_index/
    cold = time.perf_counter() - t
    t = time.perf_counter()
    view = RunView(args.run)  # what every later start does: read back
    warm = time.perf_counter() - t
    t = time.perf_counter()
    RunView(args.run, index=False)  # the run's tables alone (what serving the first page waits for)
    pages = time.perf_counter() - t
    print(f"browse: {args.run}: {len(view.movies)} movies, {sum(map(len, view.shots.values()))} shots, "
          f"{len(view.windows)} scenes indexed; start-up: first start {cold:.1f} s (every window embedded), "
          f"later starts {warm:.2f} s ({view.index_cached} movies read back from browse_index/), "
          f"pages served after {pages:.2f} s (the index builds behind them)")
    with Server(make_app(view)) as base:
        port = int(base.rsplit(":", 1)[1])
        print("| route | first request ms (cold) | requests | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|---|")
        for name, paths in routes(view).items():
            times, cold = [], []
            for path in paths:
                status, dt = get(port, path)  # first touch: a shard's tar headers, the movie encoder, a heatmap render
                if status != 200:
                    raise SystemExit(f"{path}: HTTP {status}")
                cold.append(dt * 1000)
            for i in range(args.requests):
                status, dt = get(port, paths[i % len(paths)])
                times.append(dt * 1000)
            q = np.percentile(times, [50, 95])
            print(f"| {name} | {max(cold):.0f} | {len(times)} | {q[0]:.1f} | {q[1]:.1f} | {max(times):.1f} |", flush=True)
        if args.screenshots:
            screenshots(port, view, Path(args.screenshots))


if __name__ == "__main__":
    main()
