"""The demo world: real videos with known answers, seeded, with the properties the method needs."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from movies2scenes.catalogue import load_catalogue, load_watch_logs
from movies2scenes.demo import make_world
from movies2scenes.video import iter_frames, probe

from conftest import small_world_config


def _files(world: Path) -> dict[str, bytes]:
    return {str(p.relative_to(world)): p.read_bytes() for p in sorted(world.rglob("*")) if p.is_file()}


def test_world_is_complete_and_valid(small_world):
    cat = load_catalogue(small_world / "catalogue.csv", require_videos=True)
    assert len(cat) == 4
    logs = load_watch_logs(small_world / "watch_logs.csv", set(cat.ids()))
    assert len(logs) > 0
    world = json.loads((small_world / "world.json").read_text())
    assert len(world["genres"]) == 3 and len(world["places"]) == 5
    dist = np.array(world["genre_place_distribution"])
    assert dist.shape == (3, 5) and np.allclose(dist.sum(1), 1)
    truth = list(csv.DictReader(open(small_world / "ground_truth" / "shots.csv")))
    by_movie = defaultdict(list)
    for r in truth:
        by_movie[r["movie_id"]].append(r)
    for movie in cat:
        rows = by_movie[movie.movie_id]
        info = probe(movie.video)
        assert (info.width, info.height, info.fps) == (160, 96, 12.0)
        n = sum(1 for _ in iter_frames(movie.video, (160, 96)))
        assert n == int(rows[-1]["end_frame"])  # every frame made it into the file
        assert all(int(a["end_frame"]) == int(b["start_frame"]) for a, b in zip(rows, rows[1:]))
        scenes = Counter(int(r["scene"]) for r in rows)
        assert all(3 <= c <= 6 for c in scenes.values())  # shots_per_scene [3, 6]
        places = [int(r["place"]) for r in rows]
        scene_place = {int(r["scene"]): int(r["place"]) for r in rows}
        assert all(scene_place[s] != scene_place[s + 1] for s in range(len(scene_place) - 1))
        assert len(set(places)) >= 2
        assert movie.genres and movie.synopsis and movie.title


def test_same_seed_same_world_and_worlds_extend(tmp_path):
    cfg = small_world_config(num_movies=2)
    a = make_world(tmp_path / "a", cfg, seed=5, progress=False, workers=1)
    b = make_world(tmp_path / "b", cfg, seed=5, progress=False, workers=2)
    assert _files(a) == _files(b)  # byte-identical, whatever the number of workers
    c = make_world(tmp_path / "c", cfg, seed=6, progress=False)
    assert _files(c)["videos/m0000.mp4"] != _files(a)["videos/m0000.mp4"]
    bigger = make_world(tmp_path / "d", small_world_config(num_movies=3), seed=5, progress=False)
    assert _files(bigger)["videos/m0001.mp4"] == _files(a)["videos/m0001.mp4"]
    stamp = (a / "world.json").stat().st_mtime_ns
    make_world(a, cfg, seed=5, progress=False)  # complete already: a no-op
    assert (a / "world.json").stat().st_mtime_ns == stamp


def _shot_thumbnails(world: Path):
    truth = list(csv.DictReader(open(world / "ground_truth" / "shots.csv")))
    out = []
    for movie in sorted({r["movie_id"] for r in truth}):
        frames = list(iter_frames(world / "videos" / f"{movie}.mp4", (160, 96)))
        for r in (r for r in truth if r["movie_id"] == movie):
            mid = frames[(int(r["start_frame"]) + int(r["end_frame"])) // 2]
            thumb = cv2.resize(mid, (8, 5), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
            out.append((movie, int(r["scene"]), int(r["place"]), thumb))
    return out


def _nearest_neighbour_rates(world: Path) -> tuple[float, float]:
    """How often a shot's nearest raw-appearance neighbour (outside its own scene) comes from the
    same movie, and how often from the same place."""
    shots = _shot_thumbnails(world)
    x = np.stack([s[3] for s in shots])
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    same_movie = same_place = 0
    for i, (movie, scene, place, _) in enumerate(shots):
        own_scene = np.array([m == movie and s == scene for m, s, _, _ in shots])
        j = int(np.argmin(np.where(own_scene, np.inf, d[i])))
        same_movie += shots[j][0] == movie
        same_place += shots[j][2] == place
    return same_movie / len(shots), same_place / len(shots)


def test_movie_look_is_a_tunable_nuisance(tmp_path):
    """With the per-movie look, raw appearance clusters by movie; without it, by place."""
    rates = {}
    for strength in (1.0, 0.0):
        cfg = small_world_config(num_movies=8, look_strength=strength)
        rates[strength] = _nearest_neighbour_rates(make_world(tmp_path / str(strength), cfg, seed=3,
                                                              progress=False))
    print(f"NN same movie / same place: look 1.0 → {rates[1.0]}, look 0.0 → {rates[0.0]}")
    movie_on, place_on = rates[1.0]
    movie_off, place_off = rates[0.0]
    assert movie_on > 3 * movie_off
    assert place_off > place_on + 0.15
    assert movie_on > place_on  # appearance alone groups by movie, not by place


def test_watch_logs_follow_genre_tastes(tmp_path):
    world = make_world(tmp_path / "w", small_world_config(num_movies=24, num_genres=4, num_users=300,
                                                          genres_per_movie=[1, 1],
                                                          watches_per_user=[3, 6]),
                       seed=1, progress=False)
    cat = load_catalogue(world / "catalogue.csv")
    genres = {m.movie_id: set(m.genres) for m in cat}
    logs = load_watch_logs(world / "watch_logs.csv", set(genres))
    per_user = defaultdict(list)
    for u, m, t in zip(logs.user_id, logs.movie_id, logs.timestamp):
        per_user[u].append((t, m))
    consecutive = []
    for events in per_user.values():
        assert events == sorted(events)  # time order per user
        consecutive += [(a[1], b[1]) for a, b in zip(events, events[1:])]
    share = np.mean([bool(genres[a] & genres[b]) for a, b in consecutive])
    rng = np.random.default_rng(0)
    ids = list(genres)
    random_pairs = [tuple(rng.choice(ids, 2, replace=False)) for _ in range(5000)]
    base = np.mean([bool(genres[a] & genres[b]) for a, b in random_pairs])
    print(f"co-watched next share a genre: {share:.2f} vs random pairs {base:.2f}")
    assert share > 1.5 * base


def test_synopses_mention_genre_and_places(small_world):
    world = json.loads((small_world / "world.json").read_text())
    places = [p["name"] for p in world["places"]]
    for m in load_catalogue(small_world / "catalogue.csv"):
        assert any(g in m.synopsis for g in world["genres"])
        assert any(p in m.synopsis for p in places)


def test_bad_world_config_is_refused():
    from movies2scenes.config import ConfigError, load

    with pytest.raises(ConfigError, match="demo_world.width"):
        load([], ["demo_world.width=161"])


def test_gradual_transitions_with_ground_truth(tmp_path):
    """transition_rate=1: every scene boundary is a dissolve or a fade, recorded in shots.csv; the
    shots stage finds the scene boundaries near the truth and takes no keyframe inside a transition."""
    import csv

    from movies2scenes.config import DemoWorldConfig
    from movies2scenes.shots import detect_shots, make_detector
    from movies2scenes.video import FrameReader, probe

    cfg = DemoWorldConfig(num_movies=2, num_genres=2, num_places=3, scenes_per_movie=[4, 4],
                          shots_per_scene=[2, 3], transition_rate=1.0, num_users=10)
    world = make_world(tmp_path / "w", cfg, seed=5, progress=False, workers=1)
    truth = list(csv.DictReader(open(world / "ground_truth" / "shots.csv")))
    kinds = [r["transition"] for r in truth if r["transition"]]
    assert len(kinds) == 2 * 3 and set(kinds) <= {"dissolve", "fade"}  # 3 scene boundaries per movie
    for movie in ("m0000", "m0001"):
        rows = [r for r in truth if r["movie_id"] == movie]
        spans = [(int(r["transition_start"]), int(r["transition_end"])) for r in rows if r["transition"]]
        path = world / "videos" / f"{movie}.mp4"
        info = probe(path)
        shots = list(detect_shots(iter(FrameReader(path, (160, 96))), info.fps, make_detector("content", 22.0, 4),
                                  1, None, 512, 64, gradual=True))
        assert shots[-1].end == int(rows[-1]["end_frame"])  # the truth's frame numbers are the video's
        keyframes = [k for s in shots for k in s.keyframe_frames]
        assert not [k for k in keyframes if any(a <= k <= b for a, b in spans)], (spans, keyframes)
        starts = [s.start for s in shots]
        for a, b in spans:  # every transition has a detected boundary inside it (±2 frames)
            assert any(a - 2 <= x <= b + 2 for x in starts), (a, b, starts)


@pytest.fixture(scope="module")
def film_world(tmp_path_factory) -> Path:
    """A film-grammar world: 8 movies, every scene type frequent (flat genre → type mix)."""
    cfg = small_world_config(num_movies=8, num_places=6, scenes_per_movie=[4, 6], shots_per_scene=[3, 7],
                             grammar="film", cast_size=8, characters_per_movie=[3, 4], scene_type_concentration=50.0,
                             montage_places=[3, 4], val_fraction=0.25, test_fraction=0.25)
    return make_world(tmp_path_factory.mktemp("film"), cfg, seed=3, progress=False)


def _film_scenes(world: Path) -> dict[tuple[str, int], list[dict]]:
    scenes = defaultdict(list)
    for r in csv.DictReader(open(world / "ground_truth" / "shots.csv")):
        scenes[(r["movie_id"], int(r["scene"]))].append(r)
    return scenes


def test_film_grammar_scenes_follow_their_pattern(film_world):
    scenes = _film_scenes(film_world)
    kinds = Counter(rows[0]["scene_type"] for rows in scenes.values())
    assert set(kinds) == {"establishing", "dialogue", "montage"}, kinds
    movies = json.loads((film_world / "ground_truth" / "movies.json").read_text())
    for (movie, _), rows in scenes.items():
        setups = [r["setup"] for r in rows]
        chars = [r["characters"].split("|") if r["characters"] else [] for r in rows]
        places = [int(r["place"]) for r in rows]
        assert all(a != b or p != q for a, b, p, q in zip(setups, setups[1:], places, places[1:]))  # no jump cuts
        assert {c for cs in chars for c in cs} <= set(movies[movie]["cast"])  # the movie's own cast
        kind = rows[0]["scene_type"]
        if kind == "montage":
            assert len(set(places)) >= 3 and not any(chars)
            assert set(setups) <= {"wide", "medium"}
        else:
            assert len(set(places)) == 1
        if kind == "establishing":
            assert setups[0] == "wide"
        if kind == "dialogue":  # shot / reverse shot: A and B close-ups of two characters, alternating
            close = [(s, c) for s, c in zip(setups, chars) if s.startswith("close-up")]
            assert {s for s, _ in close} <= {"close-up A", "close-up B"} and all(len(c) == 1 for _, c in close)
            assert len({c[0] for _, c in close}) <= 2
            assert all(a[0] != b[0] for a, b in zip(close, close[1:]))
            assert len({c for cs in chars for c in cs}) == 2
    # actors recur across the scenes of a movie and across movies
    per_movie = {m: {c for (mm, _), rows in scenes.items() if mm == m for r in rows for c in r["characters"].split("|") if c}
                 for m in movies}
    seen = Counter(c for cs in per_movie.values() for c in cs)
    assert max(seen.values()) >= 2
    world = json.loads((film_world / "world.json").read_text())
    dist = np.array(world["genre_scene_type_distribution"])
    assert dist.shape == (3, 3) and np.allclose(dist.sum(1), 1)


def test_film_set_ups_of_a_place_look_different_and_cuts_stay_hard(film_world):
    """Within a movie (one colour grade), shots from one set-up of a place look alike and set-ups of
    a place look different (thumbnail distance); the content detector finds every cut."""
    from movies2scenes.shots import detect_shots, make_detector
    from movies2scenes.video import FrameReader

    scenes = _film_scenes(film_world)
    same, diff = [], []
    for movie in sorted({m for m, _ in scenes}):
        rows = [r for (m, _), rs in sorted(scenes.items()) if m == movie for r in rs]
        frames = list(iter_frames(film_world / "videos" / f"{movie}.mp4", (160, 96)))
        thumbs: dict[tuple[int, str], list[np.ndarray]] = defaultdict(list)
        for r in rows:
            mid = frames[(int(r["start_frame"]) + int(r["end_frame"])) // 2]
            thumbs[(int(r["place"]), r["setup"])].append(cv2.resize(mid, (8, 6), interpolation=cv2.INTER_AREA).astype(float))
        keys = sorted(thumbs)
        for i, a in enumerate(keys):
            for b in keys[i:]:
                if a[0] == b[0]:
                    (same if a == b else diff).extend(np.abs(x - y).mean() for x in thumbs[a] for y in thumbs[b] if x is not y)
        if movie in ("m0000", "m0001"):
            shots = list(detect_shots(iter(FrameReader(film_world / "videos" / f"{movie}.mp4", (160, 96))), 12.0,
                                      make_detector("content", 22.0, 4), 1, None, 512, 64))
            assert [s.start for s in shots] == [int(r["start_frame"]) for r in rows]
    assert len(same) > 50 and len(diff) > 50
    assert np.mean(same) < 0.6 * np.mean(diff), (np.mean(same), np.mean(diff))


def test_film_tasks_add_scene_type_and_characters(film_world, tmp_path):
    from movies2scenes.demo import write_demo_tasks

    files = {p.stem: p for p in write_demo_tasks(film_world, tmp_path)}
    assert set(files) == {"place", "genre", "boundary", "scene_type", "characters",
                          "arrow", "shuffled", "coverage", "establishing"}  # the order tasks (issue 39)
    read = lambda name: list(csv.DictReader(open(files[name])))  # noqa: E731
    scenes = _film_scenes(film_world)
    by_start = {(m, int(rows[0]["shot"])): rows for (m, _), rows in scenes.items()}
    types = read("scene_type")
    assert types and {r["label"] for r in types} == {"establishing", "dialogue", "montage"}
    for r in types:
        assert by_start[(r["movie_id"], int(r["start_shot"]))][0]["scene_type"] == r["label"]
    montage = {(r["movie_id"], r["start_shot"]) for r in types if r["label"] == "montage"}
    assert not montage & {(r["movie_id"], r["start_shot"]) for r in read("place")}  # no single place
    for r in read("characters"):
        rows = by_start[(r["movie_id"], int(r["start_shot"]))]
        assert r["label"].split("|") == sorted({c for x in rows for c in x["characters"].split("|") if c})


def test_film_options_do_not_change_a_bags_worlds_identity():
    """Worlds written before the film-grammar options existed stay complete (no re-render, no new
    inputs downstream); a film world is another world."""
    from dataclasses import replace

    from movies2scenes.demo import world_hash

    cfg = small_world_config()
    assert world_hash(cfg, 0) == world_hash(replace(cfg, cast_size=99, montage_places=[2, 3]), 0)
    assert world_hash(cfg, 0) != world_hash(replace(cfg, grammar="film"), 0)


def test_order_tasks_hold_the_same_shots_in_every_class(film_world, tmp_path):
    """Issue 39: every source window of an order task gives one clip per class made of the very
    same shots; the classes differ in order only, and the order is what the task says."""
    from movies2scenes.demo import write_demo_tasks

    files = {p.stem: p for p in write_demo_tasks(film_world, tmp_path)}
    setup = {(r["movie_id"], int(r["shot"])): r["setup"] for rows in _film_scenes(film_world).values() for r in rows}
    labels = {"arrow": ("forward", "reversed"), "shuffled": ("intact", "shuffled"),
              "coverage": ("alternating", "blocked"), "establishing": ("wide first", "wide last")}
    for task, (one, other) in labels.items():
        rows = list(csv.DictReader(open(files[task])))
        assert rows, task
        assert Counter(r["label"] for r in rows) == {one: len(rows) // 2, other: len(rows) // 2}
        for a, b in zip(rows[::2], rows[1::2]):  # written in pairs: the source, then its other order
            sa, sb = [int(t) for t in a["shots"].split()], [int(t) for t in b["shots"].split()]
            assert (a["label"], b["label"]) == (one, other) and a["movie_id"] == b["movie_id"]
            assert sorted(sa) == sorted(sb) and sa != sb and len(sa) == 4
            ups = [setup[(a["movie_id"], t)] for t in sa], [setup[(b["movie_id"], t)] for t in sb]
            if task == "arrow":
                assert sb == sa[::-1] and sa == sorted(sa)
            elif task == "shuffled":
                assert ups[0] != ups[1]  # a shuffle that keeps the set-up sequence could not be told
            elif task == "coverage":
                assert ups[0][0] == ups[0][2] != ups[0][1] == ups[0][3]  # A B A B
                assert ups[1][0] == ups[1][1] != ups[1][2] == ups[1][3]  # A A B B
            else:
                assert ups[0][0] == "wide" == ups[1][-1] and "wide" not in ups[0][1:]


def test_eval_only_movies_are_watched_by_nobody_and_leave_the_others_unchanged(tmp_path):
    """demo_world.eval_movies: extra movies with split "eval", no watch-log events; the other
    movies, their logs and splits are those of the world without them; demo-tasks takes its clips
    from the eval movies alone."""
    from dataclasses import replace

    from movies2scenes.demo import world_hash, write_demo_tasks

    cfg = small_world_config(num_movies=4)
    assert world_hash(cfg, 7) == world_hash(replace(cfg, eval_movies=0), 7)  # old worlds keep their identity
    a = make_world(tmp_path / "a", cfg, seed=7, progress=False)
    b = make_world(tmp_path / "b", replace(cfg, eval_movies=2), seed=7, progress=False)
    cat_a, cat_b = list(csv.DictReader(open(a / "catalogue.csv"))), list(csv.DictReader(open(b / "catalogue.csv")))
    assert cat_b[:4] == cat_a and [r["split"] for r in cat_b[4:]] == ["eval", "eval"]
    assert (a / "watch_logs.csv").read_bytes() == (b / "watch_logs.csv").read_bytes()
    assert (a / "videos" / "m0001.mp4").read_bytes() == (b / "videos" / "m0001.mp4").read_bytes()
    rows = list(csv.DictReader(open(write_demo_tasks(b, tmp_path / "tasks")[0])))
    assert rows and {r["movie_id"] for r in rows} == {"m0004", "m0005"}
