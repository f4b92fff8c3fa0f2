"""``m2s browse RUN_DIR``: a read-only local web app over a run directory.

* **Catalogue** — the movies with their shot counts, failures and splits; search by title or id.
* **Movie** — the shot strip (keyframes, timecodes) in scenes of n shots, the movie's similar
  movies by each metadata source (``movie_pairs/*.parquet``), its mined scene pairs.
* **Scene search** — a scene (movie id + start shot, or a click) → its nearest scenes in the rest
  of the catalogue from an exact faiss index over the exported encoder's embeddings of every
  window of n shots (stride ``--stride``), kept in ``RUN/browse_index/`` (:mod:`.scene_index`: a
  restart reads it back, a new movie is embedded alone; built in the background while the other
  pages are served); filter by split and movie; or a
  short uploaded clip, embedded with ``m2s embed``'s code path (``retrieval.embed_video``).
* **Mined pairs** — movie pairs by score; a pair's scene pairs side by side and its shot
  adjacency heatmap (E_movie's shot embeddings, the mined windows drawn on it).

Keyframes are read from the shot shards by random access (``store.TarIndex``: the tar's member
offsets), nothing is copied out. Read-only but for its own ``browse_index/`` cache (skipped where the
run cannot be written): no route writes into the run (an uploaded clip lives in
a temporary folder for the time it takes to embed it); every path comes from the run's own indexes
— a URL only ever names ids, which are looked up, never joined onto a path.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pyarrow.parquet as pq

from movies2scenes.errors import ConfigError
from movies2scenes.integrity import DamagedArtefact, read_done, verified
from movies2scenes.layout import RunLayout
from movies2scenes.progress import progress
from movies2scenes.retrieval import stored_vectors

from .pages import environment

PAGE = 50  # catalogue rows / movie pairs per page
SHOTS_PAGE = 300  # shots of one movie per page (a 2-hour film has 2,000+)
MAX_UPLOAD = 256 << 20


def limited_body(request, limit: int):
    """``request`` whose body may not pass ``limit`` bytes (+ 64 KiB of multipart framing): a
    Content-Length above it is answered 413 before anything is read, and a body that turns out
    longer (chunked, or a lying header) is cut off with 413 the moment it passes the limit —
    never spooled to disk first. (Starlette's ``max_part_size`` applies to text fields only.)"""
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    allowed = limit + (64 << 10)
    too_large = HTTPException(413, f"the upload is larger than {limit >> 20} MB")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > allowed:
        raise too_large
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > allowed:
                raise too_large
        return message

    return Request(request.scope, receive)


def no_such_movie(movie_id: str, known) -> str:
    """"no movie X in this run", naming the id it differs from only by case, if there is one."""
    same = [m for m in known if m.lower() == movie_id.lower()]
    return f"no movie {movie_id!r} in this run" + (f" (ids are case-sensitive: did you mean {same[0]!r}?)" if same else "")


class NotFound(KeyError):
    """An id that the run does not hold (a 404)."""


class RunView:
    """Everything the browser shows, read once from a run directory (nothing is written)."""

    def __init__(self, run_dir: str | Path, catalogue: str | Path | None = None, stride: int = 1,
                 index: bool = True, batch: int = 64, background: bool = False, index_kind: str = "auto"):
        from movies2scenes.catalogue import load_catalogue

        self.run, self.layout = Path(run_dir), RunLayout(run_dir)
        shots_dir = self.layout.folder("shots")
        if not self.layout.is_done("shots"):
            raise ConfigError(f"{self.run}: no finished shots stage (shots/DONE.json); run detect-shots first")
        cols = ["movie_id", "shot", "start_time", "end_time", "shard", "key"]
        self.shots: dict[str, list[dict]] = {}
        for r in pq.read_table(verified(shots_dir / "index.parquet"), columns=cols).to_pylist():
            self.shots.setdefault(r["movie_id"], []).append(r)
        self.failures = {}
        if (shots_dir / "failures.jsonl").is_file():
            for line in (shots_dir / "failures.jsonl").read_text().splitlines():
                if line.strip():
                    f = json.loads(line)
                    if f.get("status") != "warning":  # a warning's movie was processed
                        self.failures[f["movie_id"]] = f.get("reason", "")
        if catalogue is None:
            catalogue = self.recorded_catalogue()
        self.catalogue_path = catalogue
        self.movies: dict[str, dict] = {}
        for m in (load_catalogue(catalogue).movies if catalogue else []):
            self.movies[m.movie_id] = {"id": m.movie_id, "title": m.title, "split": m.split,
                                       "genres": list(m.genres), "synopsis": m.synopsis}
        for mid in set(self.shots) | set(self.failures):
            self.movies.setdefault(mid, {"id": mid, "title": "", "split": "", "genres": [], "synopsis": ""})
        for mid, m in self.movies.items():
            m["shots"], m["failure"] = len(self.shots.get(mid, [])), self.failures.get(mid)
        self.order = sorted(self.movies)
        self.splits = sorted({m["split"] for m in self.movies.values() if m["split"]})
        self.similar = self._movie_pairs()
        self.pairs, self.pair_n = self._scene_pairs()
        self._tars: dict[str, object] = {}
        # shared state, one lock each: a slow clip upload (the model lock) never holds up keyframes
        self._tar_lock, self._model_lock, self._cache_lock = threading.Lock(), threading.Lock(), threading.Lock()
        self.encoder, self.n, self.stride, self.windows = None, self.pair_n or 9, stride, []
        self.index, self.index_total, self.index_done, self.index_cached = None, 0, 0, 0
        self.index_kind, self.index_record = index_kind, {}  # retrieval.index_plan's kind; what the build measured
        self.index_error = ""  # why a background build failed (the file and the repair), said on /search
        self.null = self.nearest = np.zeros(0, np.float32)  # what a score means here (_score_scales)
        if index and self.layout.is_done("export"):
            self._build_index(stride, batch, background)
        self._movie_embed, self._heatmaps = None, {}

    # -- metadata -------------------------------------------------------------------------------

    def _movie_pairs(self) -> dict[str, dict[str, list[tuple[str, float]]]]:
        out: dict[str, dict[str, list[tuple[str, float]]]] = {}
        if not self.layout.is_done("movie_pairs"):
            return out
        for f in sorted(self.layout.folder("movie_pairs").glob("*.parquet")):
            best: dict[str, dict[str, float]] = {}
            for r in pq.read_table(verified(f), columns=["movie_a", "movie_b", "score"]).to_pylist():
                for a, b in ((r["movie_a"], r["movie_b"]), (r["movie_b"], r["movie_a"])):
                    d = best.setdefault(a, {})
                    d[b] = max(d.get(b, -math.inf), float(r["score"]))
            out[f.stem] = {a: sorted(d.items(), key=lambda t: (-t[1], t[0])) for a, d in best.items()}
        return out

    def _scene_pairs(self) -> tuple[list[dict], int | None]:
        done = self.layout.done("scene_pairs")
        if not done.is_file():
            return [], None
        n = int(read_done(done)["shots_per_scene"])
        cols = ["movie_a", "start_a", "movie_b", "start_b", "score", "source"]
        rows = pq.read_table(verified(self.layout.folder("scene_pairs") / "pairs.parquet"), columns=cols).to_pylist()
        rows.sort(key=lambda r: (-r["score"], r["movie_a"], r["start_a"], r["movie_b"], r["start_b"]))
        return rows, n

    def movie(self, movie_id: str) -> dict:
        if movie_id not in self.movies:
            raise NotFound(no_such_movie(movie_id, self.movies))
        return self.movies[movie_id]

    def shot_range(self, movie_id: str, start: int, end: int) -> list[dict]:
        shots = self.shots.get(movie_id, [])
        return shots[max(0, start):max(0, min(end, len(shots)))]

    # -- keyframes ------------------------------------------------------------------------------

    def keyframe(self, movie_id: str, shot: int, k: int = 0) -> bytes:
        """JPEG bytes of keyframe k of a shot, read from the movie's shard at its offset."""
        from movies2scenes.store import TarIndex

        shots = self.shots.get(movie_id)
        if not shots or not 0 <= shot < len(shots) or k < 0:
            raise NotFound(f"no shot {shot} of movie {movie_id!r}")
        r = shots[shot]
        with self._tar_lock:
            tar = self._tars.get(r["shard"])
            if tar is None:  # the shard's name comes from the run's index, never from the URL
                tar = self._tars[r["shard"]] = TarIndex(verified(self.layout.folder("shots") / r["shard"]))
        name = f"{r['key']}.{k}.jpg"
        if name in tar:
            return tar.read(name)
        if f"{r['key']}.frames.npy" in tar:  # image_format: npy — encode the one frame asked for
            import io

            import cv2

            frames = np.load(io.BytesIO(tar.read(f"{r['key']}.frames.npy")), allow_pickle=False)
            if k >= len(frames):
                raise NotFound(f"shot {shot} of {movie_id!r} has {len(frames)} keyframes")
            return cv2.imencode(".jpg", cv2.cvtColor(frames[k], cv2.COLOR_RGB2BGR))[1].tobytes()
        raise NotFound(f"shot {shot} of {movie_id!r} has no keyframe {k}")

    # -- scene search ---------------------------------------------------------------------------

    def _build_index(self, stride: int, batch: int, background: bool) -> None:
        """The encoder, and the scene index: each movie's windows read back from the run's
        ``browse_index/`` when embedded before by this export (:mod:`.scene_index`), the rest
        embedded — in a background thread when ``background`` (pages are served meanwhile and
        search says it is building), else before returning."""
        from movies2scenes.artefacts import ShotSamples
        from movies2scenes.export import load_export, scene_settings
        from movies2scenes.retrieval import scene_windows

        from .scene_index import SceneIndexCache

        export = self.layout.folder("export")
        settings = scene_settings(export)
        self.encoder = load_export(export).eval()  # the files export/DONE.json recorded, or refused
        self.n = int(settings["shots_per_scene"])
        self.shot_settings = settings.get("shots") or {}
        self.samples = ShotSamples(self.layout.folder("shots"), cache=2)
        cache = SceneIndexCache(self.layout, self.n, stride)
        plan, known, todo = [], {}, []
        for movie in sorted(self.shots):
            clips = [(movie, s, e) for s, e in scene_windows(len(self.shots[movie]), self.n, stride)]
            if clips:
                stamp = cache.stamp(movie, self.shots[movie][0]["shard"])
                plan.append((movie, clips, stamp))
                emb = cache.load(movie, stamp, len(clips), self.encoder.num_features)
                if emb is None:
                    todo.append(plan[-1])
                else:
                    known[movie] = emb
        self.index_total, self.index_done = len(plan), len(known)
        self.index_cached = len(known)

        def build() -> None:
            import torch

            from movies2scenes.evaluation import embed_clips

            try:
                with torch.no_grad():
                    for movie, clips, stamp in progress(todo, desc="browse: scene index", unit="movie"):
                        with self._model_lock:
                            known[movie] = embed_clips(self.encoder, self.samples, clips, batch)
                        cache.save(movie, stamp, known[movie])
                        self.index_done += 1
                self._assemble(plan, known)
            except Exception as e:  # a damaged shard, a full disk: said on /search, never "being built" forever
                if not background:
                    raise
                self.index_error = f"{type(e).__name__}: {e}" if not isinstance(e, ConfigError) else str(e)
                print(f"m2s browse: the scene index could not be built: {self.index_error}", file=sys.stderr)

        if background and todo:
            self._builder = threading.Thread(target=build, name="browse-scene-index", daemon=True)
            self._builder.start()
        else:
            build()

    def _assemble(self, plan: list, known: dict) -> None:
        """The faiss index over every window, in movie order — the one `m2s index` builds
        (:func:`retrieval.build_search_index`: ``index_kind`` auto is exact flat up to its switch
        point, IVF-SQ8 above, with its recall@10 measured at build time); the vectors are read back
        from it, no second copy is kept. Published last (search waits for it)."""
        from movies2scenes.retrieval import build_search_index, reconstructable

        windows = [c for _, clips, _ in plan for c in clips]
        emb = stored_vectors(np.concatenate([known[m] for m, _, _ in plan])) if plan else \
            np.zeros((0, self.encoder.num_features), np.float32)
        index, self.index_record = build_search_index(emb, "cosine", self.index_kind if len(emb) else "flat")
        self.windows = windows
        self.row = {(m, s): i for i, (m, s, _) in enumerate(windows)}
        self.null, self.nearest = self._score_scales(windows, emb, index)
        self.index = reconstructable(index)

    def _score_scales(self, windows: list, emb: np.ndarray, index, pairs: int = 4000, probes: int = 256):
        """What a cosine score means in this index (issue 42: a trailer scored 0.996 against synthetic
        stripes): the sorted scores of ``pairs`` random window pairs from different movies, and the
        sorted best score of ``probes`` random windows among other movies' windows. Seeded."""
        rng = np.random.default_rng(0)
        movies = np.array([m for m, _, _ in windows])
        if len(windows) < 2 or len(set(movies)) < 2:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        i, j = rng.integers(0, len(windows), pairs), rng.integers(0, len(windows), pairs)
        keep = movies[i] != movies[j]
        null = np.sort(np.einsum("nd,nd->n", emb[i[keep]], emb[j[keep]]))
        probe = rng.choice(len(windows), min(probes, len(windows)), replace=False)
        scores, rows = index.search(emb[probe], min(len(windows), 64))
        best = [next((s for s, r in zip(sc, rw) if r >= 0 and movies[r] != movies[p]), None)
                for p, sc, rw in zip(probe, scores, rows)]
        return null, np.sort(np.array([b for b in best if b is not None], np.float32))

    def standing(self, score: float) -> float | None:
        """The percentage of random scene pairs of different movies that score below ``score``."""
        return 100.0 * np.searchsorted(self.null, score) / len(self.null) if len(self.null) else None

    def outside(self, best: float | None) -> str:
        """A warning when a query's best hit is less similar than the catalogue's own scenes' best
        hits almost always are (below their 1st percentile): a query unlike the catalogue."""
        if best is None or len(self.nearest) < 20:
            return ""
        floor = float(np.quantile(self.nearest, 0.01))
        if best >= floor:
            return ""
        return (f"This query lies outside the catalogue's distribution: its best hit scores {best:.3f}, below what "
                f"99 % of the catalogue's own scenes find among other movies (≥ {floor:.3f}). Treat its hits as "
                "weak.")

    @property
    def emb(self) -> np.ndarray:
        """Every indexed window's vector (unit length), as the index holds it: read back, no copy kept."""
        return self.index.reconstruct_n(0, self.index.ntotal)

    @property
    def index_ready(self) -> bool:
        return self.index is not None

    def recorded_catalogue(self) -> Path | None:
        """The catalogue the run was built from: the one detect-shots (or build-movie-pairs)
        recorded in its DONE.json, if that file is still there; else a demo run's own world."""
        for stage in ("shots", "movie_pairs"):
            done = self.layout.done(stage)
            path = read_done(done).get("catalogue") if done.is_file() else None
            if path and Path(path).is_file():
                return Path(path)
        world = self.layout.world / "catalogue.csv"
        return world if world.is_file() else None

    def scene_embedding(self, movie_id: str, start: int) -> tuple[np.ndarray, int]:
        """The query embedding of the scene of n shots starting at ``start`` (a stored window, or
        embedded now), and its end shot."""
        import torch

        from movies2scenes.evaluation import embed_clips

        if movie_id not in self.shots:
            raise NotFound(no_such_movie(movie_id, self.shots))
        num = len(self.shots[movie_id])
        if not 0 <= start < num:
            raise NotFound(f"movie {movie_id!r} has no shot {start} ({num} shots)")
        end = min(start + self.n, num)
        if (movie_id, start) in self.row and self.windows[self.row[movie_id, start]][2] == end:
            return stored_vectors(self.index.reconstruct(self.row[movie_id, start])[None])[0], end  # as indexed
        with self._model_lock, torch.no_grad():
            return stored_vectors(embed_clips(self.encoder, self.samples, [(movie_id, start, end)], 1))[0], end

    def search(self, q: np.ndarray, k: int, exclude_movie: str | None = None, split: str = "",
               within: str = "") -> list[dict]:
        """The k best windows by cosine, best first: not from ``exclude_movie``, from ``split`` and
        from movies whose id or title contains ``within`` (when given), and never a window that
        overlaps a better hit of the same movie. Fetches more neighbours until k survive."""
        from movies2scenes.retrieval import Echoes

        total, fetch = self.index.ntotal, min(self.index.ntotal, max(64, 8 * k))
        q = stored_vectors(np.asarray(q, np.float32)[None])
        while True:
            scores, rows = self.index.search(q, fetch)
            hits, shown = [], Echoes()
            for score, i in zip(scores[0], rows[0]):
                if i < 0:
                    continue
                m, s, e = self.windows[i]
                info = self.movies[m]
                if m == exclude_movie or (split and info["split"] != split):
                    continue
                if within and within.lower() not in f"{m} {info['title']}".lower():
                    continue
                if shown.echo(m, s, e):
                    continue
                shown.take(m, s, e)
                shots = self.shots[m]
                hits.append({"movie": m, "title": info["title"], "split": info["split"], "start": s, "end": e,
                             "score": float(score), "standing": self.standing(float(score)),
                             "t0": shots[s]["start_time"], "t1": shots[e - 1]["end_time"], "shots": shots[s:e]})
                if len(hits) == k:
                    return hits
            if fetch >= total:
                return hits
            fetch = min(total, 4 * fetch)

    def clip_embeddings(self, path: Path, frames: list | None = None) -> tuple[np.ndarray, list]:
        """``m2s embed``'s path on an uploaded clip: the encoder's own shot settings; ``frames``
        receives each shot's middle keyframe (the page shows the query's own shots)."""
        from movies2scenes.config import load
        from movies2scenes.retrieval import embed_video

        cfg = load([], [], base={"shots": self.shot_settings} if self.shot_settings else None)
        with self._model_lock:
            emb, windows = embed_video(path, self.encoder, cfg.shots, self.n, keyframes_out=frames)
        return stored_vectors(emb), windows

    # -- mined pairs ----------------------------------------------------------------------------

    def movie_pairs(self, movie: str = "") -> list[dict]:
        groups: dict[tuple[str, str], dict] = {}
        for r in self.pairs:  # best first, so a group's first row is its best
            key = (r["movie_a"], r["movie_b"])
            if movie and movie not in key:
                continue
            g = groups.setdefault(key, {"a": key[0], "b": key[1], "count": 0, "best": r["score"], "source": r["source"],
                                        "title_a": self.title(key[0]), "title_b": self.title(key[1])})
            g["count"] += 1
        return list(groups.values())

    def title(self, movie_id: str) -> str:
        return self.movies.get(movie_id, {}).get("title", "")

    def pair_rows(self, a: str, b: str) -> list[dict]:
        rows = [r for r in self.pairs if r["movie_a"] == a and r["movie_b"] == b]
        if not rows:
            raise NotFound(f"no mined scene pairs between {a!r} and {b!r}")
        return rows

    def has_heatmap(self) -> bool:
        return all(self.layout.is_done(s) for s in ("movie_encoder", "shot_features"))

    def adjacency_png(self, a: str, b: str) -> tuple[bytes, dict]:
        """The pair's shot adjacency with its mined windows, and its legend (rendered once, the
        last 32 kept)."""
        if (a, b) in self._heatmaps:
            return self._heatmaps[a, b]
        png = self._adjacency_png(a, b)
        with self._cache_lock:
            self._heatmaps[a, b] = png
            while len(self._heatmaps) > 32:
                self._heatmaps.pop(next(iter(self._heatmaps)))
        return png

    def _adjacency_png(self, a: str, b: str) -> tuple[bytes, dict]:
        import torch

        from movies2scenes.features import ShotFeatures
        from movies2scenes.report import adjacency_png

        from movies2scenes.artefacts import MovieEmbeddings

        rows = self.pair_rows(a, b)
        if not self.has_heatmap():
            raise NotFound("the run has no movie encoder / shot features for an adjacency heatmap")
        with self._model_lock:
            if self._movie_embed is None:
                self._movie_embed = MovieEmbeddings(ShotFeatures(self.layout.folder("shot_features")),
                                                    self.layout.folder("movie_encoder"), torch.device("cpu"), cache=4)
            xa, xb = self._movie_embed(a), self._movie_embed(b)
        return adjacency_png((xa @ xb.T).numpy(), [r["start_a"] for r in rows], [r["start_b"] for r in rows],
                             self.pair_n)


def _jpeg_data_uri(rgb: np.ndarray, width: int = 160) -> str:
    """A small JPEG of an RGB frame as a data: URI (the uploaded clip's own keyframes; nothing kept)."""
    import base64

    import cv2

    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(value))) if value not in (None, "") else default
    except ValueError:
        return default


def _web_stack() -> None:
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"m2s browse needs the web stack ({', '.join(missing)} missing): "
                          "pip install 'movies2scenes[browse]'")


def make_app(view: RunView):
    """The Starlette application over ``view`` (GET routes only, plus the clip upload)."""
    _web_stack()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    env = environment()

    def page(name: str, status: int = 200, **ctx) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(run_name=str(view.run), **ctx), status_code=status)

    def pages(n: int, size: int) -> int:
        return max(1, math.ceil(n / size))

    def catalogue(request: Request):
        q, split = request.query_params.get("q", "").strip(), request.query_params.get("split", "")
        rows = [view.movies[m] for m in view.order]
        if q:
            rows = [m for m in rows if q.lower() in f"{m['id']} {m['title']}".lower()]
        if split:
            rows = [m for m in rows if m["split"] == split]
        n_pages = pages(len(rows), PAGE)
        p = _int(request.query_params.get("page"), 1, 1, n_pages)
        return page("catalogue.html", q=q, split=split, splits=view.splits, total=len(rows),
                    movies=rows[(p - 1) * PAGE:p * PAGE], page=p, pages=n_pages,
                    url=lambda i: "/?" + urlencode({"q": q, "split": split, "page": i}),
                    shots_total=sum(len(s) for s in view.shots.values()), failed=len(view.failures))

    def movie(request: Request):
        m = view.movie(request.path_params["movie_id"])
        shots = view.shots.get(m["id"], [])
        size = view.n * max(1, SHOTS_PAGE // view.n)  # whole scenes per page
        n_pages = pages(len(shots), size)
        p = _int(request.query_params.get("page"), 1, 1, n_pages)
        scenes = []
        for s in range((p - 1) * size, min(len(shots), p * size), view.n):
            e = min(s + view.n, len(shots))
            scenes.append({"start": s, "end": e, "t0": shots[s]["start_time"], "t1": shots[e - 1]["end_time"],
                           "shots": shots[s:e]})
        similar = [(src, by[m["id"]][:10]) for src, by in view.similar.items() if m["id"] in by]
        mined = [(g["b"] if g["a"] == m["id"] else g["a"], g["count"], g["best"], g["a"], g["b"])
                 for g in view.movie_pairs(m["id"])]
        return page("movie.html", movie=m, synopsis=m["synopsis"], similar=similar, has_pairs=bool(view.similar),
                    pairs=mined, n=view.n,
                    scenes=scenes, searchable=view.encoder is not None, page=p, pages=n_pages,
                    url=lambda i: f"/movie/{quote(m['id'], safe='')}?page={i}")

    def search_form(params) -> dict:
        return {"movie": params.get("movie", "").strip(), "start": params.get("start", "0").strip() or "0",
                "k": _int(params.get("k"), 10, 1, 100), "split": params.get("split", ""),
                "within": params.get("in", "").strip()}

    def clip_query(path: Path):
        frames: list = []
        emb, windows = view.clip_embeddings(path, frames)
        return emb, windows, frames

    def search_page(form: dict, queries: list, error: str = "", status: int = 200, clip: bool = False):
        if view.index_error:  # the build stopped: say why and how to repair, never "being built" forever
            error, status = f"the scene index could not be built: {view.index_error}", 500
        building = None if view.encoder is None or view.index_ready or view.index_error else \
            (view.index_done, view.index_total)
        return page("search.html", status=status, form=form, queries=queries, error=error, splits=view.splits, clip=clip,
                    searchable=view.encoder is not None, indexed=len(view.windows), n=view.n, stride=view.stride,
                    building=building, index_line=index_line(view))

    def search(request: Request):
        form = search_form(request.query_params)
        if view.encoder is None or not form["movie"]:
            return search_page(form, [])
        if not view.index_ready:
            return search_page(form, [], "", 503)  # search_page makes it a 500 naming the file if the build failed
        try:
            start = int(form["start"])
            q, end = view.scene_embedding(form["movie"], start)
        except ValueError:
            return search_page(form, [], f"start shot must be a whole number, not {form['start']!r}", 400)
        except NotFound as e:
            return search_page(form, [], e.args[0], 404)
        hits = view.search(q, form["k"], form["movie"], form["split"], form["within"])
        label = f"{form['movie']} shots {start}–{end - 1}"
        return search_page(form, [{"label": label, "movie": form["movie"], "shots": view.shot_range(form["movie"], start, end),
                                   "hits": hits, "outside": ""}])

    async def search_clip(request: Request):
        from movies2scenes.video import VideoError

        form = search_form(request.query_params)
        if view.encoder is None:
            return search_page(form, [], "no exported encoder in this run", 400)
        if not view.index_ready:
            return search_page(form, [], "", 503)
        request = limited_body(request, MAX_UPLOAD)  # 413 from the header, or as soon as the stream passes it
        async with request.form(max_files=1, max_fields=8, max_part_size=MAX_UPLOAD) as data:
            upload = data.get("clip")
            if upload is None or isinstance(upload, str) or not upload.filename:
                return search_page(form, [], "choose a video file to upload", 400)
            name = Path(upload.filename).name
            suffix = "".join(c for c in Path(name).suffix[:8] if c.isalnum() or c == ".")
            with tempfile.TemporaryDirectory(prefix="m2s-browse-") as tmp:  # outside the run; removed at once
                path = Path(tmp) / f"clip{suffix}"
                with open(path, "wb") as f:
                    while chunk := await upload.read(1 << 20):
                        f.write(chunk)
                try:
                    emb, windows, frames = await run_in_threadpool(clip_query, path)
                except (VideoError, OSError, ValueError) as e:
                    return search_page(form, [], f"{name}: {e}", 400)
        if not len(windows):
            return search_page(form, [], f"{name}: no shots found", 400)
        queries = []
        for e, w in list(zip(emb, windows))[:3]:
            hits = view.search(e, form["k"])
            queries.append({"label": f"{name}: shots {w.start_shot}–{w.end_shot - 1} ({w.start_time:.1f}–"
                                     f"{w.end_time:.1f} s)", "movie": "", "shots": [], "hits": hits,
                            "frames": [_jpeg_data_uri(f) for f in frames[w.start_shot:w.end_shot]],
                            "outside": view.outside(hits[0]["score"] if hits else None)})
        return search_page(form, queries, clip=True)

    def pairs(request: Request):
        movie_q = request.query_params.get("movie", "").strip()
        rows = view.movie_pairs(movie_q)
        n_pages = pages(len(rows), PAGE)
        p = _int(request.query_params.get("page"), 1, 1, n_pages)
        return page("pairs.html", mined=view.pair_n is not None, movie=movie_q, total=len(rows),
                    scene_pairs=len(view.pairs), n=view.pair_n, rows=rows[(p - 1) * PAGE:p * PAGE], page=p,
                    pages=n_pages, url=lambda i: "/pairs?" + urlencode({"movie": movie_q, "page": i}))

    def pair(request: Request):
        a, b = request.path_params["a"], request.path_params["b"]
        rows = [dict(r, shots_a=view.shot_range(a, r["start_a"], r["start_a"] + view.pair_n),
                     shots_b=view.shot_range(b, r["start_b"], r["start_b"] + view.pair_n))
                for r in view.pair_rows(a, b)]
        legend = view.adjacency_png(a, b)[1] if view.has_heatmap() else None
        return page("pair.html", a=a, b=b, rows=rows, n=view.pair_n, heatmap=legend)

    def adjacency(request: Request):
        png, _ = view.adjacency_png(request.path_params["a"], request.path_params["b"])
        return Response(png, media_type="image/png")

    def keyframe(request: Request):
        p = request.path_params
        data = view.keyframe(p["movie_id"], p["shot"], p["k"])
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def not_found(request: Request, exc: Exception):
        message = exc.args[0] if isinstance(exc, NotFound) else getattr(exc, "detail", "not found")
        if request.url.path.endswith((".jpg", ".png")):
            return Response(str(message), status_code=404, media_type="text/plain")
        return page("error.html", status=404, heading="Not found", message=message)

    async def damaged(request: Request, exc: DamagedArtefact):  # a run file changed since its stage wrote it
        if request.url.path.endswith((".jpg", ".png")):
            return Response(str(exc), status_code=500, media_type="text/plain")
        return page("error.html", status=500, heading="A file of the run is damaged", message=str(exc))

    async def http_error(request: Request, exc: HTTPException):
        return page("error.html", status=exc.status_code, heading=f"Error {exc.status_code}", message=exc.detail)

    routes = [Route("/", catalogue), Route("/movie/{movie_id}", movie), Route("/search", search),
              Route("/search/clip", search_clip, methods=["POST"]), Route("/pairs", pairs),
              Route("/pairs/{a}/{b}", pair), Route("/pairs/{a}/{b}/adjacency.png", adjacency),
              Route("/keyframe/{movie_id}/{shot:int}/{k:int}.jpg", keyframe)]
    app = Starlette(routes=routes, exception_handlers={NotFound: not_found, 404: not_found,
                                                       HTTPException: http_error, DamagedArtefact: damaged})
    app.router.redirect_slashes = False  # an unknown path is a 404, never a redirect to a guess
    return app


def index_line(view: RunView) -> str:
    """What the scene index is: its kind, its factory string and (approximate kinds) the recall@10 measured at build."""
    r = view.index_record
    if not r:
        return ""
    recall = f", recall@10 {r['recall_at_10']:.3f} against exact search (measured at build)" if "recall_at_10" in r else ""
    return f"{r['kind']} index ({r['factory']}){recall}"


def serve(run_dir: str, catalogue: str | None, host: str, port: int, stride: int, index_kind: str = "auto") -> int:
    _web_stack()  # before minutes of indexing
    import uvicorn

    view = RunView(run_dir, catalogue, stride=stride, background=True, index_kind=index_kind)
    if view.encoder is None:
        print(f"m2s browse: {run_dir} has no export/DONE.json — scene search is off until export has run")
    print(f"m2s browse: {len(view.movies)} movies, {sum(map(len, view.shots.values()))} shots, "
          f"{len(view.pairs)} mined scene pairs; scene index: {view.index_cached} of {view.index_total} movies "
          "read back from browse_index/" + ("" if view.index_ready or view.encoder is None
                                             else ", the rest being embedded while pages are served"))
    print(f"m2s browse: serving {run_dir} read-only at http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(make_app(view), host=host, port=port, log_level="warning")
    return 0
