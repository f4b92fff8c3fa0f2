"""`m2s browse` latency on a run directory (the demo run by default): the app is served by uvicorn in
this process and every route is requested over real HTTP (http.client, one connection per request),
N times each after one warm-up request; p50 / p95 / max per route. Start-up is timed separately:
the first start (the run's browse_index/ removed: every window embedded), a later start (read back
from browse_index/), and the run's tables alone (when `m2s browse` serves its first page). ``--screenshots DIR`` also saves the main pages as
JPEG through Debian's chromium (Playwright) — the images in docs/.

    python bench/browse.py [--run runs/demo] [--requests 50] [--screenshots docs]
    python bench/browse.py --run none --index-scale 1000 2000 4000 [--windows 500 --dim 96]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import tempfile
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


class FakeLayout:
    """What :class:`SceneIndexCache` reads of a run: DONE records of export and shots, and its folder."""

    def __init__(self, root: Path, shards: dict):
        import json

        self.root, self.browse_index = root, root / "browse_index"
        hashes = {"config_hash": "0" * 64, "input_hash": "0" * 64}
        for stage, record in (("export", {"outputs": {"model.safetensors": "0" * 64}}), ("shots", {"files": shards})):
            (root / stage).mkdir(parents=True, exist_ok=True)
            (root / stage / "DONE.json").write_text(json.dumps({**hashes, **record}))

    def done(self, stage: str) -> Path:
        return self.root / stage / "DONE.json"


def index_scale(sizes: list[int], windows: int, dim: int) -> None:
    """A later start's index part against catalogue size, at feature level: ``m`` movies of
    ``windows`` cached window embeddings (``dim``-d) read back from browse_index/ and added to the
    flat index — what RunView does once the run's tables are read."""
    import faiss

    from movies2scenes.apps.browse.scene_index import SceneIndexCache

    print("\n| movies | windows | read back (s) | concatenate + normalise + faiss add (s) | index memory (GB) |\n|---|---|---|---|---|")
    times = []
    rng = np.random.default_rng(0)
    for m in sizes:
        work = Path(tempfile.mkdtemp(prefix="m2s-browse-index-"))
        try:
            movies = [f"m{i:06d}" for i in range(m)]
            layout = FakeLayout(work, {f"shots-{mid}.tar": [1, mid] for mid in movies})
            cache = SceneIndexCache(layout, 9, 1)
            block = rng.standard_normal((windows, dim)).astype(np.float32)
            for mid in movies:
                cache.save(mid, cache.stamp(mid, f"shots-{mid}.tar"), block)
            t = time.perf_counter()
            cache = SceneIndexCache(layout, 9, 1)
            got = [cache.load(mid, cache.stamp(mid, f"shots-{mid}.tar"), windows) for mid in movies]
            read = time.perf_counter() - t
            assert all(g is not None for g in got)
            t = time.perf_counter()
            x = np.concatenate(got)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            index = faiss.IndexFlatIP(dim)
            index.add(x)
            add = time.perf_counter() - t
            times.append(read + add)
            print(f"| {m:,} | {m * windows:,} | {read:.2f} | {add:.2f} | {x.nbytes / 1e9:.2f} |", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if len(sizes) > 1:
        slope = np.polyfit(np.log(sizes), np.log(times), 1)[0]
        print(f"start-up index part: t ∝ movies^{slope:.2f} over {sizes[0]:,}–{sizes[-1]:,} movies")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--screenshots", metavar="DIR")
    ap.add_argument("--index-scale", type=int, nargs="*", metavar="MOVIES",
                    help="also time a later start's index part at these catalogue sizes (feature level: "
                         "--windows cached windows of --dim floats per movie), e.g. 1000 4000")
    ap.add_argument("--windows", type=int, default=500)
    ap.add_argument("--dim", type=int, default=96)
    args = ap.parse_args()
    if args.index_scale:
        index_scale(args.index_scale, args.windows, args.dim)
        if args.run == "none":
            return
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
