"""`m2s browse`: the pages over a real (small) run, keyframes by random access into the shot shards,
scene search against a brute-force search, clip upload, read-only and path traversal, and a real
browser (Debian's chromium driven by Playwright) clicking catalogue → movie → scene search → hit."""

from __future__ import annotations

import hashlib
import json
import html
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from testkit.web import ALL_IMAGES_LOADED, Server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def view(exported_run, small_world):
    from movies2scenes.apps.browse import RunView

    return RunView(exported_run[0], small_world / "catalogue.csv")


@pytest.fixture(scope="module")
def client(view):
    from starlette.testclient import TestClient

    from movies2scenes.apps.browse import make_app

    return TestClient(make_app(view))


def _tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_catalogue_lists_every_movie_with_its_shots_and_searches(client, exported_run, small_world):
    from movies2scenes.catalogue import load_catalogue

    index = pq.read_table(exported_run[0] / "shots" / "index.parquet", columns=["movie_id"])["movie_id"].to_pylist()
    movies = load_catalogue(small_world / "catalogue.csv").movies
    page = client.get("/").text
    for m in movies:
        row = re.search(rf'<tr><td><a href="/movie/{m.movie_id}">{m.movie_id}</a></td><td>([^<]*)</td><td>([^<]*)</td>'
                        rf"\s*<td>[^<]*</td><td>(\d+)</td>", page)
        assert row, m.movie_id
        assert (html.unescape(row[1]), row[2], int(row[3])) == (m.title, m.split, index.count(m.movie_id))
    one = movies[1]
    hits = client.get("/", params={"q": one.title.split()[-1].upper()}).text  # case-insensitive, by title
    assert f'href="/movie/{one.movie_id}"' in hits
    assert all(f'href="/movie/{m.movie_id}"' not in hits for m in movies if one.title.split()[-1] not in m.title)
    split = client.get("/", params={"split": one.split}).text
    assert all((f'href="/movie/{m.movie_id}"' in split) == (m.split == one.split) for m in movies)


def test_movie_page_strip_and_keyframes_come_from_the_shard(client, exported_run, view):
    from movies2scenes.store import iter_tar

    run = exported_run[0]
    movie = sorted(view.shots)[0]
    page = client.get(f"/movie/{movie}").text
    srcs = re.findall(r'<img src="(/keyframe/[^"]+)"', page)
    assert len(srcs) == len(view.shots[movie])  # one keyframe per shot, every shot shown
    samples = list(iter_tar(run / "shots" / view.shots[movie][0]["shard"]))
    for shot in (0, len(samples) - 1):
        r = client.get(f"/keyframe/{movie}/{shot}/0.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content == samples[shot]["0.jpg"]  # the stored bytes, by offset, nothing re-encoded
    assert client.get(f"/keyframe/{movie}/{len(samples)}/0.jpg").status_code == 404
    assert client.get(f"/keyframe/{movie}/0/7.jpg").status_code == 404
    # similar movies: every source's pairs of this movie are listed
    for f in (run / "movie_pairs").glob("*.parquet"):
        others = {r["movie_b"] if r["movie_a"] == movie else r["movie_a"] for r in pq.read_table(f).to_pylist()
                  if movie in (r["movie_a"], r["movie_b"])}
        for other in others:
            assert re.search(rf"<td>{f.stem}</td><td>.*?/movie/{other}\"", page)


def test_scene_search_agrees_with_a_brute_force_search(client, view, exported_run):
    from movies2scenes.export import load_scene_encoder
    from movies2scenes.retrieval import scene_windows
    from movies2scenes.evaluation import embed_clips
    from movies2scenes.artefacts import ShotSamples

    run = exported_run[0]
    encoder = load_scene_encoder(run / "export").eval()
    n = view.n
    clips = [(m, s, e) for m in sorted(view.shots) for s, e in scene_windows(len(view.shots[m]), n)]
    emb = embed_clips(encoder, ShotSamples(run / "shots"), clips, 8)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    query = clips[0]
    cos = emb @ emb[0]
    others = [i for i, c in enumerate(clips) if c[0] != query[0]]
    best = max(others, key=lambda i: cos[i])
    page = client.get("/search", params={"movie": query[0], "start": query[1], "k": 3}).text
    hits = re.findall(r'score ([0-9.-]+) \(above [0-9.]+ % of random pairs\) · <a class="hit-movie" '
                      r'href="/movie/([^"]+)">.*?shots (\d+)–(\d+)', page)
    assert hits, page[-2000:]
    assert (hits[0][1], int(hits[0][2])) == (clips[best][0], clips[best][1])
    assert abs(float(hits[0][0]) - cos[best]) < 2e-3
    scores = [float(h[0]) for h in hits]
    assert scores == sorted(scores, reverse=True) and all(h[1] != query[0] for h in hits)
    for i, (_, m, s, e) in enumerate(hits):  # never two overlapping windows of one movie
        assert all(not (m == m2 and int(s) <= int(e2) and int(s2) <= int(e)) for _, m2, s2, e2 in hits[:i])
    split = view.movies[hits[0][1]]["split"]
    filtered = client.get("/search", params={"movie": query[0], "start": 0, "split": split}).text
    found = re.findall(r'class="hit-movie" href="/movie/([^"]+)"', filtered)
    assert found and all(view.movies[m]["split"] == split for m in found)
    assert client.get("/search", params={"movie": "nope", "start": 0}).status_code == 404
    bad = client.get("/search", params={"movie": query[0], "start": "x"})
    assert bad.status_code == 400 and "whole number" in bad.text


def test_clip_upload_searches_and_bad_uploads_are_clear(client, bikes):
    with open(bikes, "rb") as f:
        r = client.post("/search/clip", files={"clip": ("bikes.mp4", f, "video/mp4")})
    assert r.status_code == 200, r.text[-1500:]
    assert "bikes.mp4: shots 0–" in r.text and r.text.count('class="hit-movie"') >= 1
    # issue 42 (7): the clip's own shots are shown, a score has a standing, no "query's movie" for a clip
    assert r.text.count('class="query-frame" src="data:image/jpeg;base64,') >= 3
    assert "of random pairs)" in r.text and "leave out the query's movie" not in r.text
    r = client.post("/search/clip", files={"clip": ("notes.mp4", b"this is not a video", "video/mp4")})
    assert r.status_code == 400 and "notes.mp4:" in r.text
    r = client.post("/search/clip", files={})
    assert r.status_code == 400 and "choose a video file" in r.text


def test_mined_pairs_pages_and_heatmap(client, view, exported_run):
    pairs = pq.read_table(exported_run[0] / "scene_pairs" / "pairs.parquet").to_pylist()
    page = client.get("/pairs").text
    groups = {(r["movie_a"], r["movie_b"]) for r in pairs}
    assert len(re.findall(r'<a href="/pairs/[^"/]+/[^"/]+">\d+</a>', page)) == len(groups)
    a, b = pairs[0]["movie_a"], pairs[0]["movie_b"]
    pair = client.get(f"/pairs/{a}/{b}").text
    want = sum((r["movie_a"], r["movie_b"]) == (a, b) for r in pairs)
    assert pair.count('<div class="side">') == want
    assert pair.count(f'src="/keyframe/{a}/') == want * view.pair_n
    png = client.get(f"/pairs/{a}/{b}/adjacency.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    img = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)  # BGR
    cell = int(re.search(r"\((\d+) px per shot\)", pair)[1])
    assert img.shape[:2] == (len(view.shots[a]) * cell, len(view.shots[b]) * cell)
    for r in pairs:
        if (r["movie_a"], r["movie_b"]) == (a, b):  # each mined window is outlined in red
            assert tuple(img[r["start_a"] * cell, r["start_b"] * cell]) == (0, 0, 255)
    assert client.get(f"/pairs/{b}/{a}x").status_code == 404


TRAVERSALS = [
    "/movie/..%2F..%2Fetc%2Fpasswd", "/movie/%2e%2e%2fshots%2fDONE.json", "/movie/..", "/movie/..%2F", "/movie/.%2E", "/movie/%2e%2e",
    "/keyframe/..%2Fshots/0/0.jpg", "/keyframe/..%2F..%2F..%2Fetc%2Fpasswd/0/0.jpg",
    "/keyframe/{movie}/0/..%2F..%2FDONE.json", "/keyframe/{movie}/-1/0.jpg", "/keyframe/{movie}/0/0.json",
    "/pairs/..%2Fshots/DONE.json", "/pairs/..%2F..%2Fetc/passwd/adjacency.png", "/shots/DONE.json",
    "/../shots/DONE.json", "/static/..%2F..%2Fshots%2FDONE.json", "/export/model.safetensors",
]


def _raw_get(base: str, path: str, method: str = "GET") -> tuple[int, str]:
    """The path sent exactly as written (http.client does not resolve dot segments or decode)."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path)
    r = conn.getresponse()
    body = r.read().decode("utf-8", "replace")
    conn.close()
    return r.status, body


def test_read_only_and_no_url_reaches_the_file_system(client, view, exported_run, bikes):
    from movies2scenes.apps.browse import make_app

    run = exported_run[0]
    before = _tree_hash(run)
    movie = sorted(view.shots)[0]
    secret = (run / "shots" / "DONE.json").read_text()[:40]
    with Server(make_app(view)) as base:  # a real server: raw paths, no client-side normalisation
        for url in TRAVERSALS:
            status, body = _raw_get(base, url.format(movie=movie))
            assert status in (400, 404, 405), (url, status)
            assert secret not in body and "root:" not in body
        for url in ("/", "/pairs", f"/movie/{movie}", f"/search?movie={movie}&start=0"):
            assert _raw_get(base, url)[0] == 200
            assert _raw_get(base, url, "POST")[0] == 405  # nothing accepts writes but the clip upload
            assert _raw_get(base, url, "DELETE")[0] == 405
    with open(bikes, "rb") as f:
        assert client.post("/search/clip", files={"clip": ("../../x.mp4", f, "video/mp4")}).status_code == 200
    assert _tree_hash(run) == before


def test_a_run_without_an_export_still_browses(shots_run, small_world):
    from starlette.testclient import TestClient

    from movies2scenes.apps.browse import RunView, make_app

    client = TestClient(make_app(RunView(shots_run, small_world / "catalogue.csv")))
    assert client.get("/").status_code == 200
    page = client.get("/search", params={"movie": "m0000", "start": 0}).text
    assert "no exported scene encoder" in page
    assert "run mine-scene-pairs" in client.get("/pairs").text


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", "browse", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no finished shots stage" in r.stderr


# ---------------------------------------------------------------------------------------------
# a real browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


def browser_or_skip():
    """Debian's chromium + Playwright's Python driver (no browser download); CI sets
    M2S_REQUIRE_BROWSER=1, where a missing browser is a failure, not a skip."""
    required = os.environ.get("M2S_REQUIRE_BROWSER") == "1"
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        if required:
            pytest.fail("playwright is not installed (make setup installs it)")
        pytest.skip("playwright is not installed")
    path = _chromium()
    if path is None:
        if required:
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return path


def test_click_through_in_a_real_browser(view, tmp_path):
    chromium = browser_or_skip()
    from playwright.sync_api import sync_playwright

    from movies2scenes.apps.browse import make_app

    movie = sorted(view.shots)[0]
    with Server(make_app(view)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        assert page.locator("table#movies tr").count() == len(view.movies) + 1
        page.click(f"table#movies a[href='/movie/{movie}']")
        assert page.url.endswith(f"/movie/{movie}")
        images = page.evaluate(ALL_IMAGES_LOADED)
        assert images["total"] == len(view.shots[movie]) and not images["broken"]
        page.screenshot(path=str(tmp_path / "movie.png"))
        page.click("a.similar >> nth=0")
        assert "/search?movie=" in page.url
        images = page.evaluate(ALL_IMAGES_LOADED)
        assert images["total"] > view.n and not images["broken"]
        hit = page.locator("a.hit-movie").first
        target = hit.get_attribute("href")
        assert target != f"/movie/{movie}"
        hit.click()
        assert page.url.endswith(target) and page.locator("h1").count() == 1
        assert not page.evaluate(ALL_IMAGES_LOADED)["broken"]
        browser.close()


def test_keyframes_are_served_while_the_encoder_is_busy(client, view):
    """A clip upload holds the encoder for seconds; keyframes and pages must not wait for it."""
    movie = sorted(view.shots)[0]
    got = {}

    def fetch():
        got["keyframe"] = client.get(f"/keyframe/{movie}/1/0.jpg").status_code
        got["movie"] = client.get(f"/movie/{movie}").status_code

    with view._model_lock:  # as during an upload's embedding
        t = threading.Thread(target=fetch)
        t.start()
        t.join(20)
        assert not t.is_alive(), "a keyframe request waited for the encoder"
    assert got == {"keyframe": 200, "movie": 200}


def test_npy_keyframes_are_served_as_jpeg(small_world, tmp_path):
    import cv2
    from starlette.testclient import TestClient

    from movies2scenes.config import load
    from movies2scenes.store import decode_keyframes, iter_tar
    from movies2scenes.stages import detect_shots
    from movies2scenes.apps.browse import RunView, make_app

    run = tmp_path / "run"
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], [f"run_dir={run}", f"catalogue={small_world / 'catalogue.csv'}",
                                                  "shots.image_format=npy"])
    assert detect_shots.run(cfg) == 0
    view = RunView(run, small_world / "catalogue.csv")
    movie = sorted(view.shots)[0]
    r = TestClient(make_app(view)).get(f"/keyframe/{movie}/2/0.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    samples = list(iter_tar(run / "shots" / view.shots[movie][2]["shard"]))
    err = [np.abs(img.astype(int) - decode_keyframes(samples[i])[0]).mean() for i in (2, 3)]
    assert img.shape == decode_keyframes(samples[2])[0].shape
    assert err[0] < 8 and err[0] < err[1] / 2  # shot 2's frame (JPEG-coded), not its neighbour's
    assert TestClient(make_app(view)).get(f"/keyframe/{movie}/2/5.jpg").status_code == 404


def test_long_movies_are_paged_in_whole_scenes(view, client, monkeypatch):
    import movies2scenes.apps.browse.app as app

    movie = max(view.shots, key=lambda m: len(view.shots[m]))
    monkeypatch.setattr(app, "SHOTS_PAGE", 2 * view.n + 1)  # not a multiple of n: pages still hold whole scenes
    first, second = client.get(f"/movie/{movie}").text, client.get(f"/movie/{movie}?page=2").text
    starts = [int(x) for page in (first, second) for x in re.findall(r"<div>shots (\d+)–", page)]
    assert starts == list(range(0, 4 * view.n, view.n))[:len(starts)] and len(starts) >= 3
    assert "page 1 of" in first and "next »" in first


def test_an_oversized_upload_is_refused_on_the_stream(view, monkeypatch):
    """issue 29, class 4: the upload limit holds on the stream — a declared Content-Length above it
    is answered 413 before the body is read, and a chunked body is cut off once it passes the limit
    (today's main read 2 GB in full, spooled it to disk twice, then refused it)."""
    import select
    import socket

    from movies2scenes.apps.browse import app as browse_app
    from movies2scenes.apps.browse import make_app

    monkeypatch.setattr(browse_app, "MAX_UPLOAD", 1 << 20)
    boundary = "m2sboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"clip\"; filename=\"big.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()

    def post(headers: str, chunks, chunked: bool) -> tuple[int, int]:
        """(status, body bytes sent before the answer came)."""
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall((f"POST /search/clip HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                       f"boundary={boundary}\r\n{headers}\r\n").encode())
            sent = 0
            for chunk in chunks:
                if select.select([s], [], [], 0)[0]:
                    break  # the server answered
                try:
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
            answer = b""
            while b"\r\n" not in answer:
                answer += s.recv(4096)
        return int(answer.split()[1]), sent

    def body(total: int):
        yield head
        for _ in range(total // (256 << 10)):
            yield b"\0" * (256 << 10)

    with Server(make_app(view)) as base:
        status, sent = post("Content-Length: 2147483648\r\n", body(2 << 30), chunked=False)
        assert status == 413 and sent < (8 << 20), (status, sent)  # answered from the header
        status, sent = post("Transfer-Encoding: chunked\r\n", body(64 << 20), chunked=True)
        assert status == 413 and sent < (8 << 20), (status, sent)  # cut off on the stream


def test_the_runs_own_catalogue_titles_pairs_and_clear_refusals(client, view, exported_run, small_world):
    """Issue 32 (2, 3): without --catalogue, browse reads the catalogue detect-shots recorded (before,
    only RUN/world/catalogue.csv: a user's run had no titles, genres or splits); mined pairs name and
    link their movies; an id in the wrong case is "no such movie", not "has no shot"; a JPEG upload is
    called a still image."""
    import cv2

    from movies2scenes.apps.browse import RunView

    own = RunView(exported_run[0], index=False)
    assert own.catalogue_path == (small_world / "catalogue.csv").resolve()
    assert any(m["title"] for m in own.movies.values()) and own.splits == view.splits
    a = view.movie_pairs()[0]["a"]
    page = client.get("/pairs").text
    assert f'<a href="/movie/{a}">{a}</a> · {view.title(a)}' in page and view.title(a)
    r = client.get("/search", params={"movie": a.upper() if a.upper() != a else a.lower(), "start": "1"})
    assert r.status_code == 404 and "no movie" in r.text and "did you mean" in r.text and "has no shot" not in r.text
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    r = client.post("/search/clip", files={"clip": ("photo.jpg", jpeg.tobytes(), "image/jpeg")})
    assert r.status_code == 400 and "a still image" in r.text and "playlist" not in r.text


def test_scene_index_is_kept_in_the_run_grows_alone_and_builds_behind_the_pages(exported_run, tmp_path, monkeypatch):
    """Issue 32 (1): browse embedded every window of the catalogue at every start (26–57 s for the
    demo, hours at 10⁴ titles). The index is now kept in RUN/browse_index/: a restart embeds nothing,
    a movie whose cache is gone is embedded alone, and while embedding runs in the background every
    page is served and search says it is building."""
    import threading

    from starlette.testclient import TestClient

    import movies2scenes.evaluation as evaluation
    from movies2scenes.apps.browse import RunView, make_app

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run, ignore=shutil.ignore_patterns("browse_index"))
    real, calls = evaluation.embed_clips, []

    def counted(encoder, samples, clips, batch):
        calls.append(clips[0][0])
        return real(encoder, samples, clips, batch)

    monkeypatch.setattr(evaluation, "embed_clips", counted)
    first = RunView(run)
    assert first.index_cached == 0 and len(calls) == first.index_total > 1
    assert len(list((run / "browse_index").glob("*.npy"))) == first.index_total
    calls.clear()
    again = RunView(run)
    assert calls == [] and again.index_cached == again.index_total
    assert again.windows == first.windows and np.array_equal(again.emb, first.emb)
    movie = again.windows[0][0]
    q = again.emb[0]
    assert again.search(q, 5, movie) == first.search(q, 5, movie)
    next((run / "browse_index").glob(f"{movie}-*.npy")).unlink()
    grown = RunView(run)
    assert calls == [movie] and np.array_equal(grown.emb, first.emb)

    shutil.rmtree(run / "browse_index")
    gate = threading.Event()

    def slow(encoder, samples, clips, batch):
        gate.wait(60)
        return real(encoder, samples, clips, batch)

    monkeypatch.setattr(evaluation, "embed_clips", slow)
    t = time.perf_counter()
    view = RunView(run, background=True)
    assert time.perf_counter() - t < 30 and not view.index_ready
    client = TestClient(make_app(view))
    assert client.get("/").status_code == 200 and client.get(f"/movie/{movie}").status_code == 200
    r = client.get("/search", params={"movie": movie, "start": "0"})
    assert r.status_code == 503 and "being built: 0 of" in r.text
    gate.set()
    view._builder.join(120)
    r = client.get("/search", params={"movie": movie, "start": "0"})
    assert r.status_code == 200 and r.text.count('class="hit-movie"') >= 1 and np.array_equal(view.emb, first.emb)


def test_m2s_search_on_a_run_uses_the_kept_scene_index(exported_run, tmp_path, capsys):
    """Issue 32 (1): `m2s search RUN --movie M --start S` searches the run's browse_index/ (building
    it where missing) and gives browse's hits; the index-folder form is unchanged."""
    from movies2scenes.apps.browse import RunView
    from movies2scenes.cli import main

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run, ignore=shutil.ignore_patterns("browse_index"))
    view = RunView(run)  # builds and keeps the index
    movie = view.windows[0][0]
    want = view.search(view.scene_embedding(movie, 0)[0], 3, movie)
    assert main(["search", str(run), "--movie", movie, "--start", "0", "-k", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(h["movie_id"], h["start_shot"]) for h in got["hits"]] == [(h["movie"], h["start"]) for h in want]
    assert main(["search", str(run), "--movie", movie]) == 0
    assert f"of {view.index_total} movies read back from browse_index/" in capsys.readouterr().out
    assert main(["search", str(run), "--query", "x.parquet", "--row", "0"]) == 2
    assert "is a run directory: give --movie" in capsys.readouterr().err
    assert main(["search", str(run), "--movie", movie.upper() + "X"]) == 2
    assert "no movie" in capsys.readouterr().err


def test_kept_index_files_prove_themselves_or_are_embedded_again(exported_run, tmp_path, monkeypatch):
    """Issue 41 class 3: edited values in browse_index/*.npy were served (a planted window became
    hit #1 at 1.000), NaN rows gave zero hits, a file of another width crashed search, and removing
    the cache of movie `film` removed `film-2`'s."""
    import movies2scenes.evaluation as evaluation
    from movies2scenes.apps.browse import RunView
    from movies2scenes.apps.browse.scene_index import SceneIndexCache
    from movies2scenes.layout import RunLayout

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run, ignore=shutil.ignore_patterns("browse_index"))
    first = RunView(run)
    files = sorted((run / "browse_index").glob("*.npy"))
    planted = files[0]
    emb = np.load(planted)
    emb[0] = first.emb[1] * 100  # a window planted to match another: same size, other bytes
    with open(planted, "wb") as f:
        np.save(f, emb)
    nan = files[1]
    emb = np.load(nan)
    emb[0] = np.nan
    with open(nan, "wb") as f:
        np.save(f, emb)
    real, calls = evaluation.embed_clips, []
    monkeypatch.setattr(evaluation, "embed_clips", lambda e, s, clips, b: calls.append(clips[0][0]) or real(e, s, clips, b))
    again = RunView(run)
    assert sorted(calls) == sorted({first.windows[0][0], nan.name.rsplit("-", 2)[0]})
    assert np.array_equal(again.emb, first.emb)

    # another encoder's width, correctly named: not this encoder's, embedded again
    cache = SceneIndexCache(RunLayout(run), again.n, again.stride)
    movie = again.windows[0][0]
    stamp = cache.stamp(movie, again.shots[movie][0]["shard"])
    windows = sum(1 for m, _, _ in again.windows if m == movie)
    cache.save(movie, stamp, np.ones((windows, 7), np.float32))
    calls.clear()
    third = RunView(run)
    assert calls == [movie] and np.array_equal(third.emb, first.emb)

    # one movie's clean-up never touches another id that starts alike
    cache = SceneIndexCache(RunLayout(run), 9, 1)
    cache.shards = {"a.tar": [1, "x"], "b.tar": [1, "y"]}
    cache.save("film-2", cache.stamp("film-2", "b.tar"), np.ones((2, 3), np.float32))
    cache.save("film", cache.stamp("film", "a.tar"), np.ones((2, 3), np.float32))
    cache.save("film", cache.stamp("film", "a.tar"), np.zeros((2, 3), np.float32))
    assert cache.load("film-2", cache.stamp("film-2", "b.tar"), 2, 3) is not None


def test_a_changed_export_is_refused_by_browse_search_and_embed(exported_run, tmp_path, capsys):
    """Issue 41 class 3: a same-size edit of export/model.safetensors was used by browse, search
    and `m2s embed` while evaluate refused the same file."""
    from movies2scenes.apps.browse import RunView
    from movies2scenes.cli import main
    from movies2scenes.integrity import DamagedArtefact

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run, ignore=shutil.ignore_patterns("browse_index"))
    weights = run / "export" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedArtefact, match="m2s export --verify"):
        RunView(run)
    assert not (run / "browse_index").exists()
    movie = sorted(p.name[len("shots-"):-len(".tar")] for p in (run / "shots").glob("shots-*.tar"))[0]
    capsys.readouterr()
    assert main(["search", str(run), "--movie", movie, "--start", "0"]) == 2
    assert str(weights) in capsys.readouterr().err


def test_a_failed_background_build_names_the_file_instead_of_building_forever(exported_run, tmp_path):
    """Issue 41 class 3: a shot shard damaged before browse started killed the background build and
    /search answered 503 "being built: 5 of 10" forever."""
    from starlette.testclient import TestClient

    from movies2scenes.apps.browse import RunView, make_app

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run, ignore=shutil.ignore_patterns("browse_index"))
    shard = sorted((run / "shots").glob("shots-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    view = RunView(run, background=True)
    view._builder.join(120)
    movie = shard.name[len("shots-"):-len(".tar")]
    r = TestClient(make_app(view)).get("/search", params={"movie": movie, "start": "0"})
    assert r.status_code == 500 and str(shard) in r.text and "being built" not in r.text


def test_a_score_has_a_standing_and_a_query_unlike_the_catalogue_is_said(exported_run, tmp_path):
    """Issue 42 (7): a real trailer scored 0.996 against synthetic stripes, above the best in-domain
    hit, with nothing to say what a score means. A hit's standing is its percentile among random
    pairs of different movies in the index; a query whose best hit is below what 99 % of the
    catalogue's own scenes find is said to lie outside the catalogue's distribution."""
    from movies2scenes.apps.browse import RunView

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run, ignore=shutil.ignore_patterns("browse_index"))
    view = RunView(run)
    assert len(view.null) > 100 and len(view.nearest) >= 20
    assert view.standing(float(view.null[0]) - 1) == 0.0 and view.standing(float(view.null[-1]) + 1) == 100.0
    movie = view.windows[0][0]
    hits = view.search(view.emb[0], 5, movie)
    assert all(0.0 <= h["standing"] <= 100.0 for h in hits)
    assert view.outside(hits[0]["score"]) == ""  # a scene of the catalogue is like the catalogue
    far = -view.emb.mean(0)  # the direction away from every indexed scene
    best = view.search(far, 1)[0]["score"]
    assert best < float(view.nearest[0]) and "outside the catalogue's distribution" in view.outside(best)


def test_the_kept_index_can_be_compressed_and_says_its_measured_recall(exported_run, view, tmp_path):
    """`m2s browse --index ivfsq8` (what auto picks above its switch point): the same windows and
    the same best hit as the exact index for a stored scene, the build's recall@10 on the search
    page, the vectors read back from the index (no second copy), and the flat index's record."""
    from starlette.testclient import TestClient

    from movies2scenes.apps.browse import RunView, make_app
    from movies2scenes.cli import INDEX_CHOICES
    from movies2scenes.retrieval import INDEX_KINDS

    assert list(INDEX_KINDS) == INDEX_CHOICES
    assert view.index_record == {"kind": "flat", "factory": "Flat", "params": {}}
    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run)
    small = RunView(run, index_kind="ivfsq8")
    record = small.index_record
    assert record["kind"] == "ivfsq8" and record["factory"].endswith(",SQ8") and 0.9 <= record["recall_at_10"] <= 1
    assert small.windows == view.windows and small.emb.shape == view.emb.shape
    assert np.abs(small.emb - view.emb).max() < 0.02  # 8-bit codes of the same unit vectors
    movie, start, _ = view.windows[0]
    q, _ = view.scene_embedding(movie, start)
    best = lambda v: [(h["movie"], h["start"]) for h in v.search(q, 1, movie)]  # noqa: E731
    assert best(small) == best(view)
    page = TestClient(make_app(small)).get("/search").text
    assert f"ivfsq8 index ({record['factory']}), recall@10 {record['recall_at_10']:.3f} against exact search" in page
