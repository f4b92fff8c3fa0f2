"""The synthetic demo world: real video files with known answers.

A world has G genres and P *places* (visual themes). A place fixes a palette, a background
gradient, a texture (stripes, checks, dots, waves or blobs), an object shape and a motion style.
Each genre has its own distribution over places (Dirichlet, so genres overlap). A movie has 1–2
genres; it is a sequence of scenes, each scene 3–12 shots of one place; shots of a scene share the
place but differ in framing (zoom, offset, texture phase/angle), which palette colour is background,
objects and motion. Consecutive shots are separated by hard cuts.

Every movie also has its own *look* — colour grade (per-channel gain/offset), contrast, gamma, film
grain and letter-/pillar-box framing — applied to all its frames. This nuisance makes raw
appearance cluster by movie, so that learning place identity *across* movies needs cross-movie
positives (the paper's thesis). ``look_strength`` scales it (0 = no look).

Cuts are guaranteed to be hard in the metric PySceneDetect's ContentDetector uses (mean HSV
difference between consecutive frames): a shot is re-drawn until its first frame differs from the
previous shot's last frame by more than ``min_cut_score`` at full size and ``min_cut_score_small``
downscaled to ``cut_check_size`` (fine textures blur away at small working sizes), and until its own frame-to-frame changes
stay below ``max_motion_score`` (both measured on the final, graded frames).

**Film grammar** (``grammar: film``, issue 16). Real scenes are not bags of one look; each option
models a property of films:

* *Camera set-ups.* Each place has four fixed set-ups — wide, medium, close-up A and close-up B
  (the reverse angle) — each its own zoom, texture angle/phase and background colour, so shots of
  one set-up look alike and set-ups of a place look clearly different. A close-up is mostly a
  character in front of a blurred, desaturated background: alone it is often ambiguous between
  places; the set of views of a scene is not.
* *Scene types* with a label: **establishing** (a wide shot, then medium and close-up coverage of
  1–3 characters), **dialogue** (shot–reverse-shot: close-ups of two characters alternating A B A
  B, sometimes opened or broken by a medium two-shot), **montage** (3–5 places, one short shot
  each, no recurring characters). Each genre has its own scene-type mix (Dirichlet), as
  places already have: metadata says something about scenes.
* *A cast.* The world has ``cast_size`` actors (costume colour and pattern, skin, hair), each
  movie ``characters_per_movie`` of them, recurring across its scenes — and, like real actors,
  across movies. Ground truth: the characters of every shot (the probe "which characters are in
  this scene").
* Gradual transitions: ``transition_rate`` as in the bags world.

Users with genre tastes watch movies in time order (the watch logs); synopses come from templates
that name the movie's genre and its most frequent places, with noise. Everything is seeded; a
movie depends only on (seed, its index), so a bigger world extends a smaller one.

Written files (``out_dir``): ``videos/*.mp4``, ``catalogue.csv``, ``watch_logs.csv``,
``ground_truth/shots.csv`` (movie_id, shot, start_frame, end_frame, scene, place; film grammar
adds scene_type, setup, characters),
``ground_truth/movies.json`` (genres, look, scenes), ``world.json`` (genres, places, config) — the
last written; its presence with the same config hash means the world is complete.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .config import DemoWorldConfig, config_hash
from .store import atomic_path, write_json

GENRE_NAMES = ["drama", "comedy", "thriller", "western", "romance", "horror", "scifi", "musical",
               "war", "crime", "fantasy", "mystery"]
PLACE_NAMES = ["forest", "desert", "harbour", "city street", "laboratory", "ballroom", "cave",
               "snowfield", "beach", "office", "kitchen", "stadium", "train station", "library",
               "hospital", "farm"]
TEXTURES = ["stripes", "checks", "dots", "waves", "blobs"]
SCENE_TYPES = ["establishing", "dialogue", "montage"]
SETUPS = ["wide", "medium", "close-up A", "close-up B"]
COSTUME_PATTERNS = ["solid", "split", "collar"]
SKIN = [[224, 172, 138], [198, 134, 96], [141, 85, 54], [241, 194, 160], [110, 66, 42]]
HAIR = [[30, 22, 18], [92, 56, 30], [200, 160, 90], [150, 40, 20], [190, 190, 190]]
SHAPES = ["circle", "rectangle", "triangle", "bar"]
GENRE_ADJ = {"drama": "moving", "comedy": "light-hearted", "thriller": "tense", "western": "dusty",
             "romance": "tender", "horror": "chilling", "scifi": "speculative", "musical": "tuneful",
             "war": "harrowing", "crime": "gritty", "fantasy": "enchanted", "mystery": "puzzling"}
TITLE_A = ["Silent", "Last", "Broken", "Golden", "Hidden", "Long", "Red", "Quiet", "Distant", "Final",
           "Paper", "Iron", "Bright", "Lonely", "Second"]
TITLE_B = ["Harbour", "Summer", "Promise", "Road", "Letters", "Winter", "Signal", "Garden", "River",
           "Night", "Crossing", "Echo", "Machine", "Kingdom", "Season"]
CHARACTERS = ["a retired pilot", "two sisters", "a young detective", "an old musician",
              "a stubborn farmer", "a group of students", "a lonely engineer", "a travelling nurse"]
FILLER = ["Nothing is quite what it seems.", "Old secrets resurface.", "A promise is tested.",
          "The past refuses to stay buried.", "Friendships are strained.", "Time is running out."]


def _names(pool: list[str], n: int, stem: str) -> list[str]:
    return [pool[i] if i < len(pool) else f"{stem} {i}" for i in range(n)]


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """h in [0, 1), s, v in [0, 1] → float RGB in [0, 255]."""
    px = np.uint8([[[int(h * 180) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


@dataclass
class Place:
    index: int
    name: str
    palette: list[list[float]]  # 3 RGB colours
    texture: str
    texture_period: float  # pixels at zoom 1
    texture_angle: float  # degrees
    shape: str
    objects: tuple[int, int]
    speed: float  # pixels/frame of camera pan at zoom 1


def make_places(cfg: DemoWorldConfig, seed: int) -> list[Place]:
    rng = np.random.default_rng([seed, 1])
    places = []
    names = _names(PLACE_NAMES, cfg.num_places, "place")
    offset = rng.random()
    for p in range(cfg.num_places):
        hue = (offset + p / cfg.num_places + rng.normal(0, 0.02)) % 1.0
        sat = rng.uniform(0.45, 0.9)
        palette = [
            _hsv_to_rgb(hue, sat, rng.uniform(0.75, 0.95)),
            _hsv_to_rgb((hue + rng.uniform(0.12, 0.25)) % 1, rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.55)),
            _hsv_to_rgb((hue - rng.uniform(0.3, 0.45)) % 1, rng.uniform(0.4, 0.9), rng.uniform(0.55, 0.85)),
        ]
        places.append(Place(
            index=p, name=names[p], palette=[c.tolist() for c in palette],
            texture=TEXTURES[p % len(TEXTURES)] if p < len(TEXTURES) else str(rng.choice(TEXTURES)),
            texture_period=float(rng.uniform(10, 28)), texture_angle=float(rng.uniform(0, 180)),
            shape=SHAPES[(p // 2 + p) % len(SHAPES)], objects=(int(rng.integers(1, 3)), int(rng.integers(3, 6))),
            speed=float(rng.uniform(0.2, 0.8)),
        ))
    return places


def make_genres(cfg: DemoWorldConfig, seed: int) -> np.ndarray:
    """(G, P) place distribution of each genre (rows sum to 1)."""
    rng = np.random.default_rng([seed, 2])
    return rng.dirichlet(np.full(cfg.num_places, cfg.genre_concentration), size=cfg.num_genres)


@dataclass
class Character:
    """An actor of the world's cast: who they are is in their costume, skin and hair."""
    index: int
    name: str
    costume: list[float]
    trim: list[float]
    pattern: str
    skin: list[float]
    hair: list[float]


def make_cast(cfg: DemoWorldConfig, seed: int) -> list[Character]:
    rng = np.random.default_rng([seed, 6])
    offset = rng.random()
    cast = []
    for i in range(cfg.cast_size):
        hue = (offset + i / max(1, cfg.cast_size) * 2.0) % 1.0  # two turns of the wheel: patterns differ
        costume = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.35, 0.95))
        trim = _hsv_to_rgb((hue + rng.uniform(0.3, 0.7)) % 1, rng.uniform(0.3, 0.9), rng.uniform(0.6, 1.0))
        cast.append(Character(i, f"actor {i:02d}", costume.tolist(), trim.tolist(),
                              COSTUME_PATTERNS[i % len(COSTUME_PATTERNS)], SKIN[int(rng.integers(len(SKIN)))],
                              HAIR[int(rng.integers(len(HAIR)))]))
    return cast


def make_setups(cfg: DemoWorldConfig, seed: int, places: list[Place]) -> list[list[dict]]:
    """Per place, its camera set-ups (``SETUPS``): fixed framing, texture and background colour."""
    rng = np.random.default_rng([seed, 5])
    out = []
    for place in places:
        zoom = [rng.uniform(0.5, 0.7), rng.uniform(1.1, 1.4), rng.uniform(2.2, 3.0), rng.uniform(2.2, 3.0)]
        pal = place.palette
        h, sat, val = cv2.cvtColor(np.uint8([[pal[0]]]), cv2.COLOR_RGB2HSV)[0, 0] / [180, 255, 255]
        reverse = _hsv_to_rgb((h + 0.5) % 1, 0.5 * sat + 0.2, 0.8 * val).tolist()  # the opposite wall
        colours = [(pal[0], pal[1]), (pal[1], pal[2]), (pal[2], pal[0]), (reverse, pal[1])]  # (background, texture)
        angle = [place.texture_angle, place.texture_angle + 35, place.texture_angle + 70, place.texture_angle - 60]
        out.append([{"setup": SETUPS[k], "zoom": float(zoom[k]), "angle": float(angle[k]),
                     "phase": float(rng.uniform(0, 2 * math.pi)), "colours": [list(map(float, c)) for c in colours[k]],
                     "pan": float(rng.uniform(0, 2 * math.pi))} for k in range(len(SETUPS))])
    return out


def make_genre_scene_types(cfg: DemoWorldConfig, seed: int) -> np.ndarray:
    """(G, 3) scene-type distribution of each genre (rows sum to 1)."""
    rng = np.random.default_rng([seed, 7])
    return rng.dirichlet(np.full(len(SCENE_TYPES), cfg.scene_type_concentration), size=cfg.num_genres)


# ----------------------------------------------------------------------------------------------
# rendering


def _texture_mask(kind: str, h: int, w: int, period: float, angle: float, phase: float,
                  rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = math.radians(angle)
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    f = 2 * math.pi / period
    if kind == "stripes":
        return (np.sin(f * u + phase) > 0).astype(np.float32)
    if kind == "checks":
        return ((np.sin(f * u + phase) > 0) ^ (np.sin(f * v + phase) > 0)).astype(np.float32)
    if kind == "dots":
        return ((np.sin(f * u + phase) * np.sin(f * v + phase)) > 0.5).astype(np.float32)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(f * u + 3 * np.sin(f * 0.35 * v) + phase)
    # blobs: smooth random field
    small = rng.random((max(2, int(h / period) + 2), max(2, int(w / period) + 2))).astype(np.float32)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field > 0.5).astype(np.float32)


@dataclass
class Look:
    gain: list[float]
    offset: list[float]
    contrast: float
    gamma: float
    grain: float
    bars: str  # "none", "letterbox", "pillarbox"
    bar_fraction: float

    @staticmethod
    def sample(rng: np.random.Generator, strength: float, grain: float) -> "Look":
        s = strength
        bars = str(rng.choice(["none", "letterbox", "pillarbox"])) if s > 0 else "none"
        return Look(
            gain=(1 + s * rng.uniform(-0.25, 0.25, 3)).tolist(),
            offset=(s * rng.uniform(-25, 25, 3)).tolist(),
            contrast=float(1 + s * rng.uniform(-0.25, 0.25)),
            gamma=float(math.exp(s * rng.uniform(-0.3, 0.3))),
            grain=float(grain * s * rng.uniform(0.5, 1.5)),
            bars=bars,
            bar_fraction=float(s * rng.uniform(0.04, 0.10)) if bars != "none" else 0.0,
        )

    def apply(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = frame.astype(np.float32) / 255.0
        x = np.power(np.clip(x, 0, 1), self.gamma)
        x = (x - 0.5) * self.contrast + 0.5
        x = x * 255.0 * np.asarray(self.gain, np.float32) + np.asarray(self.offset, np.float32)
        if self.grain > 0:
            x += rng.normal(0, self.grain, x.shape[:2])[..., None].astype(np.float32)
        out = np.clip(x, 0, 255).astype(np.uint8)
        h, w = out.shape[:2]
        if self.bars == "letterbox":
            b = int(round(h * self.bar_fraction))
            out[:b] = 0
            out[h - b:] = 0
        elif self.bars == "pillarbox":
            b = int(round(w * self.bar_fraction))
            out[:, :b] = 0
            out[:, w - b:] = 0
        return out


def content_score(a: np.ndarray, b: np.ndarray) -> float:
    """ContentDetector's frame score: mean |Δ| of H, S and V (OpenCV units), averaged."""
    ha = cv2.cvtColor(a, cv2.COLOR_RGB2HSV).astype(np.int32)
    hb = cv2.cvtColor(b, cv2.COLOR_RGB2HSV).astype(np.int32)
    return float(np.abs(ha - hb).reshape(-1, 3).mean(axis=0).mean())


class ShotRenderer:
    """One shot of ``place`` seen through ``look``: random framing drawn once, frames on demand.

    ``previous`` = (background palette index, dim) of the previous shot of the same scene: a cut
    inside a scene changes the background colour and the exposure, so that the cut is hard."""

    def __init__(self, place: Place, look: Look, n_frames: int, w: int, h: int,
                 rng: np.random.Generator, speed_scale: float = 1.0,
                 previous: tuple[int, bool] | None = None, close_up: bool | None = None):
        self.place, self.look, self.w, self.h, self.rng = place, look, w, h, rng
        zoom = rng.uniform(0.6, 1.6)
        pal = [np.asarray(c, np.float32) for c in place.palette]
        order = rng.permutation(3)
        while previous is not None and order[0] == previous[0]:
            order = rng.permutation(3)
        self.background = int(order[0])
        bg, fg, obj = pal[order[0]], pal[order[1]], pal[order[2]]
        angle = place.texture_angle + rng.normal(0, 12)
        vx, vy = rng.normal(0, 1, 2)
        norm = max(math.hypot(vx, vy), 1e-6)
        speed = place.speed * speed_scale * zoom
        self.v = (vx / norm * speed, vy / norm * speed)
        self.margin = int(math.ceil(speed * n_frames)) + 2
        H, W = h + 2 * self.margin, w + 2 * self.margin
        mask = _texture_mask(place.texture, H, W, place.texture_period * zoom, angle,
                             rng.uniform(0, 2 * math.pi), rng)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.8)[..., None]  # soft edges: smooth motion
        # per-shot lighting, alternating dim/bright within a scene (a cut changes the exposure)
        self.dim = bool(rng.random() < 0.5) if previous is None else not previous[1]
        dim = self.dim
        light = rng.uniform(0.6, 0.8) if dim else rng.uniform(1.1, 1.35)
        grad = light * np.linspace(1.0, rng.uniform(0.55, 0.9), H, dtype=np.float32)[:, None, None]
        alpha = rng.uniform(0.55, 0.85)
        canvas = (bg * grad) * (1 - alpha * mask) + fg * (alpha * mask)
        self.canvas = np.clip(canvas, 0, 255).astype(np.uint8)
        self.objects = []
        if close_up is None:
            close_up = bool(rng.random() < 0.3)  # one large object fills much of the frame
        if close_up and previous is not None and order[2] == previous[0]:
            obj = pal[order[1]]  # neither dominant colour repeats the previous shot's background
        n_objects = 1 if close_up else int(rng.integers(place.objects[0], place.objects[1] + 1))
        for _ in range(n_objects):
            size = (rng.uniform(0.9, 1.3) if close_up else rng.uniform(0.08, 0.22) * zoom) * h
            pos = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h]) if close_up else rng.uniform([0, 0], [w, h])
            vel = rng.normal(0, 0.5 * speed_scale, 2)
            shade = np.clip(obj * rng.uniform(0.8, 1.2), 0, 255)
            self.objects.append((size, pos, vel, tuple(float(c) for c in shade)))

    def frame(self, t: int) -> np.ndarray:
        w, h, m = self.w, self.h, self.margin
        centre = (m + self.v[0] * t + w / 2 - 0.5, m + self.v[1] * t + h / 2 - 0.5)
        img = cv2.getRectSubPix(self.canvas, (w, h), centre)  # sub-pixel pan
        for size, pos, vel, colour in self.objects:
            cx, cy = pos + vel * t
            r = int(size / 2)
            shape = self.place.shape
            if shape == "circle":
                cv2.circle(img, (int(cx), int(cy)), r, colour, -1, cv2.LINE_AA)
            elif shape == "rectangle":
                cv2.rectangle(img, (int(cx - r), int(cy - r * 0.7)), (int(cx + r), int(cy + r * 0.7)), colour, -1)
            elif shape == "triangle":
                pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
                cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
            else:
                cv2.line(img, (int(cx - r), int(cy)), (int(cx + r), int(cy)), colour, max(2, r // 3))
        return self.look.apply(img, self.rng)


def draw_figure(img: np.ndarray, ch: Character, cx: float, cy: float, height: float) -> None:
    """A character standing at (cx, cy) (its centre), ``height`` pixels tall: body in costume
    (solid, split or with a collar of the trim colour), head, hair."""
    r = max(2, int(0.17 * height))
    head = (int(cx), int(cy - height / 2 + r))
    body_c, axes = (int(cx), int(cy + 0.18 * height)), (max(2, int(0.3 * height)), max(2, int(0.36 * height)))
    costume, trim = tuple(ch.costume), tuple(ch.trim)
    cv2.ellipse(img, body_c, axes, 0, 0, 360, costume, -1, cv2.LINE_AA)
    if ch.pattern == "split":
        cv2.ellipse(img, body_c, axes, 0, 90, 270, trim, -1, cv2.LINE_AA)
    elif ch.pattern == "collar":
        cv2.ellipse(img, (body_c[0], body_c[1] - int(0.25 * axes[1])), (int(0.55 * axes[0]), int(0.45 * axes[1])),
                    0, 180, 360, trim, -1, cv2.LINE_AA)
    cv2.circle(img, head, r, tuple(ch.skin), -1, cv2.LINE_AA)
    cv2.ellipse(img, head, (int(r * 1.1), int(r * 1.1)), 0, 180, 360, tuple(ch.hair), -1, cv2.LINE_AA)


class FilmShotRenderer:
    """One shot of the film-grammar world: a place seen from one of its set-ups, with characters.

    ``previous`` = (background palette index, dim) of the previous shot: the exposure alternates
    between consecutive shots, as in the bags world, so that every cut is hard."""

    def __init__(self, place: Place, setup: dict, characters: list[Character], look: Look, n_frames: int,
                 w: int, h: int, rng: np.random.Generator, speed_scale: float = 1.0,
                 previous: tuple[int, bool] | None = None, strong_light: bool = False):
        self.place, self.look, self.w, self.h, self.rng = place, look, w, h, rng
        self.kind, self.characters = setup["setup"], characters
        pal = [np.asarray(c, np.float32) for c in place.palette]
        self.background = SETUPS.index(self.kind)
        bg, fg = (np.asarray(c, np.float32) for c in setup["colours"])
        zoom = setup["zoom"] * rng.uniform(0.95, 1.05)
        speed = place.speed * speed_scale * min(zoom, 1.5)
        self.v = (math.cos(setup["pan"]) * speed, math.sin(setup["pan"]) * speed)
        self.margin = int(math.ceil(speed * n_frames)) + 2
        H, W = h + 2 * self.margin, w + 2 * self.margin
        mask = _texture_mask(place.texture, H, W, place.texture_period * zoom, setup["angle"] + rng.normal(0, 3),
                             setup["phase"] + rng.normal(0, 0.3), rng)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.8)[..., None]
        self.dim = bool(rng.random() < 0.5) if previous is None else not previous[1]
        if strong_light:
            light = rng.uniform(0.35, 0.5) if self.dim else rng.uniform(1.4, 1.7)
        else:
            light = rng.uniform(0.6, 0.8) if self.dim else rng.uniform(1.1, 1.35)
        grad = light * np.linspace(1.0, rng.uniform(0.55, 0.9), H, dtype=np.float32)[:, None, None]
        alpha = rng.uniform(0.55, 0.85)
        canvas = (bg * grad) * (1 - alpha * mask) + fg * (alpha * mask) * (light if strong_light else 1.0)
        if self.kind.startswith("close-up"):  # shallow focus: a soft, paler background
            canvas = cv2.GaussianBlur(canvas, (0, 0), 2.5)
            grey = canvas.mean(axis=2, keepdims=True)
            canvas = 0.5 * canvas + 0.5 * grey
        self.canvas = np.clip(canvas, 0, 255).astype(np.uint8)
        self.objects = []
        if self.kind == "wide":  # the place's props, small
            for _ in range(int(rng.integers(place.objects[0], place.objects[1] + 1))):
                self.objects.append((rng.uniform(0.08, 0.16) * h, rng.uniform([0, 0], [w, h]),
                                     rng.normal(0, 0.4 * speed_scale, 2), tuple(float(c) for c in pal[2])))
        k = len(characters)
        if self.kind == "close-up A":
            self.figures = [(0.38 * w, 0.95 * h, 1.7 * h)]
        elif self.kind == "close-up B":
            self.figures = [(0.62 * w, 0.95 * h, 1.7 * h)]
        elif self.kind == "medium":
            self.figures = [((i + 1) / (k + 1) * w, 0.62 * h, 0.85 * h) for i in range(k)]
        else:
            self.figures = [(rng.uniform(0.15, 0.85) * w, 0.72 * h, 0.32 * h) for _ in range(k)]
        self.sway = rng.uniform(0, 2 * math.pi, max(1, k))

    def frame(self, t: int) -> np.ndarray:
        w, h, m = self.w, self.h, self.margin
        centre = (m + self.v[0] * t + w / 2 - 0.5, m + self.v[1] * t + h / 2 - 0.5)
        img = cv2.getRectSubPix(self.canvas, (w, h), centre)
        for size, pos, vel, colour in self.objects:
            cx, cy = pos + vel * t
            r = int(size / 2)
            if self.place.shape == "rectangle":
                cv2.rectangle(img, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), colour, -1)
            else:
                cv2.circle(img, (int(cx), int(cy)), r, colour, -1, cv2.LINE_AA)
        for ch, (cx, cy, height), phase in zip(self.characters, self.figures, self.sway):
            draw_figure(img, ch, cx + 1.5 * math.sin(0.15 * t + phase), cy, height)
        return self.look.apply(img, self.rng)


# ----------------------------------------------------------------------------------------------
# movies


@dataclass
class MoviePlan:
    movie_id: str
    title: str
    genres: list[int]
    look: Look
    scenes: list[dict]  # {place, shots: [n_frames, ...]}; film grammar adds type, characters, shot_*
    characters: list[int] = field(default_factory=list)  # film grammar: its cast (actor indices)


def plan_movie(index: int, cfg: DemoWorldConfig, seed: int, genre_places: np.ndarray,
               genre_types: np.ndarray | None = None) -> MoviePlan:
    rng = np.random.default_rng([seed, 100, index])
    n_genres = int(rng.integers(cfg.genres_per_movie[0], min(cfg.genres_per_movie[1], cfg.num_genres) + 1))
    genres = sorted(int(g) for g in rng.choice(cfg.num_genres, size=n_genres, replace=False))
    dist = genre_places[genres].mean(axis=0)
    if cfg.grammar == "film":
        k = int(rng.integers(cfg.characters_per_movie[0], cfg.characters_per_movie[1] + 1))
        cast = sorted(int(c) for c in rng.choice(cfg.cast_size, size=k, replace=False))
        scenes = _plan_film_scenes(rng, cfg, dist, genre_types[genres].mean(axis=0), cast)
        title = f"The {rng.choice(TITLE_A)} {rng.choice(TITLE_B)}"
        look = Look.sample(rng, cfg.look_strength, cfg.grain)
        return MoviePlan(f"m{index:04d}", title, genres, look, scenes, cast)
    scenes, prev = [], -1
    for _ in range(int(rng.integers(cfg.scenes_per_movie[0], cfg.scenes_per_movie[1] + 1))):
        p = prev
        while p == prev:  # consecutive scenes are in different places
            p = int(rng.choice(cfg.num_places, p=dist))
        prev = p
        n_shots = int(rng.integers(cfg.shots_per_scene[0], cfg.shots_per_scene[1] + 1))
        lengths = rng.integers(cfg.shot_frames[0], cfg.shot_frames[1] + 1, size=n_shots)
        scenes.append({"place": p, "shots": [int(x) for x in lengths]})
    title = f"The {rng.choice(TITLE_A)} {rng.choice(TITLE_B)}"
    look = Look.sample(rng, cfg.look_strength, cfg.grain)
    return MoviePlan(f"m{index:04d}", title, genres, look, scenes)


def _plan_film_scenes(rng: np.random.Generator, cfg: DemoWorldConfig, place_dist: np.ndarray,
                      type_dist: np.ndarray, cast: list[int]) -> list[dict]:
    """Scenes of the film-grammar world: per scene its type, place (-1: a montage) and characters,
    per shot its length, place, set-up and characters. Consecutive shots never share a set-up of
    the same place (no jump cuts); consecutive scenes are in different places."""
    num_places = len(place_dist)
    scenes, prev = [], -1
    for _ in range(int(rng.integers(cfg.scenes_per_movie[0], cfg.scenes_per_movie[1] + 1))):
        kind = SCENE_TYPES[int(rng.choice(len(SCENE_TYPES), p=type_dist))]
        if kind == "montage":  # quick cuts through several places, no recurring characters
            m = int(rng.integers(cfg.montage_places[0], cfg.montage_places[1] + 1))
            mix = 0.5 * place_dist + 0.5 / num_places  # a montage wanders beyond the genre's places
            where = [int(q) for q in rng.choice(num_places, size=m, replace=False, p=mix)]
            if where[0] == prev:
                where = where[1:] + where[:1]
            places = where  # one shot per place: a cut within a place without characters is too soft
            setups = [("wide", "medium")[int(rng.integers(2))] for _ in places]
            lengths = rng.integers(cfg.shot_frames[0], cfg.shot_frames[0] + 5, size=len(places))
            scenes.append({"type": kind, "place": -1, "characters": [], "shots": [int(x) for x in lengths],
                           "shot_places": places, "shot_setups": setups, "shot_characters": [[] for _ in places]})
            prev = places[-1]
            continue
        p = prev
        while p == prev:
            p = int(rng.choice(num_places, p=place_dist))
        prev = p
        n_shots = int(rng.integers(cfg.shots_per_scene[0], cfg.shots_per_scene[1] + 1))
        if kind == "establishing":  # a wide shot, then coverage: medium shots and close-ups
            who = sorted(int(c) for c in rng.choice(cast, size=int(rng.integers(1, min(3, len(cast)) + 1)), replace=False))
            setups, chars = ["wide"], [list(who)]
            while len(setups) < n_shots:
                if rng.random() < 0.35:
                    setup, c = "medium", list(who)
                else:
                    i = int(rng.integers(len(who)))
                    setup, c = ("close-up A" if i % 2 == 0 else "close-up B"), [who[i]]
                if setup != setups[-1]:
                    setups.append(setup)
                    chars.append(c)
        else:  # dialogue: shot / reverse shot of two characters, sometimes a medium two-shot
            who = sorted(int(c) for c in rng.choice(cast, size=2, replace=False))
            setups, chars, turn = [], [], 0
            if rng.random() < 0.5:
                setups, chars = ["medium"], [list(who)]
            while len(setups) < n_shots:
                if setups and setups[-1] != "medium" and rng.random() < 0.15:
                    setups.append("medium")
                    chars.append(list(who))
                else:
                    setups.append("close-up A" if turn % 2 == 0 else "close-up B")
                    chars.append([who[turn % 2]])
                    turn += 1
        lengths = rng.integers(cfg.shot_frames[0], cfg.shot_frames[1] + 1, size=n_shots)
        scenes.append({"type": kind, "place": p, "characters": list(who), "shots": [int(x) for x in lengths],
                       "shot_places": [p] * n_shots, "shot_setups": setups, "shot_characters": chars})
    return scenes


def render_movie(plan: MoviePlan, index: int, cfg: DemoWorldConfig, seed: int,
                 places: list[Place], path: Path, film: tuple | None = None) -> list[dict]:
    """Render and encode one movie to ``path`` (atomically). Returns its ground-truth shot rows.
    ``film``: (set-ups per place, cast) of the film-grammar world."""
    import av

    rng = np.random.default_rng([seed, 200, index])
    rows, frame_no, shot_no, prev_last = [], 0, 0, None  # frame_no: frames encoded
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        codec = "h264" if cfg.codec == "h264" else "mpeg4"
        # one encoder thread and explicit timestamps: the same frames give the same bytes
        options = ({"crf": str(cfg.crf), "preset": "veryfast",
                    "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0"}
                   if codec == "h264" else {"qmin": "2", "qmax": "3"})
        stream = container.add_stream(codec, rate=cfg.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = cfg.width, cfg.height, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "mpeg4":
            stream.codec_context.bit_rate = 4_000_000  # generous: the quantiser bounds decide
        stream.codec_context.gop_size = 4 * cfg.fps
        trng = np.random.default_rng([seed, 201, index]) if cfg.transition_rate > 0 else None
        held: list[np.ndarray] = []  # the previous shot's frames, not yet encoded: a transition may change its tail

        def emit(frames: list[np.ndarray]) -> None:
            nonlocal frame_no
            for f in frames:
                # RGB → YUV 4:2:0 by OpenCV, not by the encoder's scaler (whose output varied
                # from run to run), so the same frames always give the same bytes
                yuv = cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420)
                frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                frame.pts = frame_no
                frame_no += 1
                for packet in stream.encode(frame):
                    container.mux(packet)

        timeline = 0  # frames emitted + held
        previous = None
        for scene_no, scene in enumerate(plan.scenes):
            if film is None:
                previous = None  # bags: the exposure alternates within a scene only
            for j, n in enumerate(scene["shots"]):
                if film is None:
                    place_no, place = scene["place"], places[scene["place"]]
                    make = functools.partial(_bags_shot, place, plan.look, n, cfg.width, cfg.height, rng)
                else:
                    place_no = scene["shot_places"][j]
                    place = places[place_no]
                    chosen = SETUPS.index(scene["shot_setups"][j])
                    chars = [film[1][c] for c in scene["shot_characters"][j]]
                    # a shot without characters may fall back to another set-up of its place
                    setups = [film[0][place_no][k] for k in [chosen] + ([k for k in range(len(SETUPS)) if k != chosen]
                                                                        if not chars else [])]
                    make = functools.partial(_film_shot, place, setups, chars, plan.look, n, cfg.width, cfg.height, rng)
                frames, previous, shot = _render_checked(make, place.name, n, cfg, prev_last, previous)
                frames = list(frames)
                prev_last = frames[-1]
                row = {"movie_id": plan.movie_id, "shot": shot_no, "start_frame": timeline, "end_frame": timeline + n,
                       "scene": scene_no, "place": place_no}
                if film is not None:
                    row.update(scene_type=scene["type"], setup=shot.kind,
                               characters="|".join(film[1][c].name for c in scene["shot_characters"][j]))
                if trng is not None:
                    row.update(transition="", transition_start=-1, transition_end=-1)
                    if scene_no > 0 and j == 0 and trng.random() < cfg.transition_rate:
                        kind = "dissolve" if trng.random() < 0.5 else "fade"
                        length = int(trng.integers(cfg.transition_frames[0], cfg.transition_frames[1] + 1))
                        length = max(2, min(length, n - 2, len(held) - 2))
                        if kind == "dissolve":  # the old shot's last L frames blend into the new one's first L
                            tail, held = held[-length:], held[:-length]
                            first = timeline - length
                            frames = [((1 - (i + 1) / (length + 1)) * tail[i].astype(np.float32)
                                       + (i + 1) / (length + 1) * frames[i].astype(np.float32)).round().astype(np.uint8)
                                      for i in range(length)] + frames[length:]
                            boundary = first + length // 2
                            rows[-1]["end_frame"] = boundary
                            row.update(start_frame=boundary, end_frame=first + n, transition="dissolve",
                                       transition_start=first, transition_end=first + length - 1)
                            timeline -= length
                        else:  # fade the old shot out to black and the new one in
                            for i in range(length):
                                held[-length + i] = (held[-length + i].astype(np.float32) * (1 - (i + 1) / length)).round().astype(np.uint8)
                                frames[i] = (frames[i].astype(np.float32) * (i / length)).round().astype(np.uint8)
                            row.update(transition="fade", transition_start=timeline - length,
                                       transition_end=timeline + length - 1)
                emit(held)
                held = frames
                rows.append(row)
                timeline += n
                shot_no += 1
        emit(held)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    return rows


def _shrink(frame: np.ndarray, cfg: DemoWorldConfig) -> np.ndarray:
    """The frame at the small working size a shot detector may decode to (fine textures blur)."""
    h, w = frame.shape[:2]
    scale = cfg.cut_check_size / min(h, w)
    if scale >= 1:
        return frame
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _bags_shot(place, look, n, w, h, rng, speed, previous, attempt, tries):
    close_up = True if attempt >= tries // 2 else None  # close-ups make the hardest cuts
    return ShotRenderer(place, look, n, w, h, rng, speed, previous, close_up)


def _film_shot(place, setups, chars, look, n, w, h, rng, speed, previous, attempt, tries):
    """The set-up fixes the framing. Where the cut is still soft (neighbouring hues), half-way
    through the tries the exposure change between the two shots is made stronger, and from three
    quarters on a shot without characters tries its place's other set-ups."""
    setup = setups[0] if len(setups) == 1 or attempt < 3 * tries // 4 else setups[attempt % len(setups)]
    return FilmShotRenderer(place, setup, chars, look, n, w, h, rng, speed, previous,
                            strong_light=attempt >= tries // 2)


def _render_checked(make, place_name, n, cfg, prev_last, previous, tries: int = 100):
    """Frames of a shot whose cut from ``prev_last`` is hard and whose motion is smooth, the
    (background, dim) state the next shot alternates from, and the renderer;
    ``make(speed, previous, attempt, tries)`` draws a renderer."""
    speed = 1.0
    for attempt in range(tries):
        shot = make(speed, previous, attempt, tries)
        first = shot.frame(0)
        if prev_last is not None and (
                content_score(prev_last, first) < cfg.min_cut_score
                or content_score(_shrink(prev_last, cfg), _shrink(first, cfg)) < cfg.min_cut_score_small):
            continue
        frames = [first] + [shot.frame(t) for t in range(1, n)]
        motion = max((content_score(a, b) for a, b in zip(frames, frames[1:])), default=0.0)
        if motion > cfg.max_motion_score:
            speed *= 0.7
            continue
        return frames, (shot.background, shot.dim), shot
    raise RuntimeError(
        f"demo world: could not render a shot of place {place_name!r} with a cut score above "
        f"{cfg.min_cut_score} ({cfg.min_cut_score_small} at {cfg.cut_check_size} px) and motion below "
        f"{cfg.max_motion_score} in {tries} tries; lower the cut scores or raise max_motion_score")


# ----------------------------------------------------------------------------------------------
# users, logs, synopses


def make_watch_logs(cfg: DemoWorldConfig, seed: int, plans: list[MoviePlan]) -> list[tuple[str, str, int]]:
    rng = np.random.default_rng([seed, 3])
    member = np.zeros((len(plans), cfg.num_genres))
    for i, p in enumerate(plans):
        member[i, p.genres] = 1.0 / len(p.genres)
    popularity = rng.lognormal(0, 0.5, len(plans))
    rows = []
    t_start = 1_704_067_200  # 2024-01-01
    for u in range(cfg.num_users):
        taste = rng.dirichlet(np.full(cfg.num_genres, cfg.taste_concentration))
        n = min(len(plans), int(rng.integers(cfg.watches_per_user[0], cfg.watches_per_user[1] + 1)))
        weight = (member @ taste + 0.01) * popularity
        t = t_start + int(rng.integers(0, 300 * 86400))
        seen: set[int] = set()
        for _ in range(n):
            w = weight.copy()
            w[list(seen)] = 0
            m = int(rng.choice(len(plans), p=w / w.sum()))
            seen.add(m)
            t += int(rng.exponential(2 * 86400)) + 3600
            rows.append((f"u{u:05d}", plans[m].movie_id, t))
    return rows


def make_synopsis(plan: MoviePlan, cfg: DemoWorldConfig, rng: np.random.Generator,
                  genre_names: list[str], places: list[Place]) -> str:
    counts: dict[int, int] = {}
    for s in plan.scenes:
        for q in s.get("shot_places") or [s["place"]] * len(s["shots"]):
            counts[q] = counts.get(q, 0) + 1
    top = sorted(counts, key=lambda p: (-counts[p], p))[:2]
    def noisy_place(p):
        return places[int(rng.integers(len(places)))].name if rng.random() < cfg.synopsis_noise else places[p].name
    g = genre_names[plan.genres[0]]
    if rng.random() < cfg.synopsis_noise:
        g = genre_names[int(rng.integers(len(genre_names)))]
    where = [noisy_place(p) for p in top]
    text = (f"{plan.title}: a {GENRE_ADJ.get(g, 'curious')} {g} about {rng.choice(CHARACTERS)} "
            f"in the {where[0]}.")
    if len(where) > 1:
        text += f" Much of the story unfolds in the {where[1]}."
    if len(plan.genres) > 1:
        text += f" It is also a {genre_names[plan.genres[1]]}."
    return text + " " + str(rng.choice(FILLER))


def _split_of(rng: np.random.Generator, n: int, cfg: DemoWorldConfig) -> list[str]:
    order = rng.permutation(n)
    n_val, n_test = int(round(n * cfg.val_fraction)), int(round(n * cfg.test_fraction))
    split = ["train"] * n
    for j, i in enumerate(order):
        if j < n_val:
            split[i] = "val"
        elif j < n_val + n_test:
            split[i] = "test"
    return split


def _render_job(job) -> list[dict]:
    return render_movie(*job)


FILM_ONLY = ("grammar", "cast_size", "characters_per_movie", "scene_type_concentration", "montage_places")


def world_hash(cfg: DemoWorldConfig, seed: int) -> str:
    """The world's identity. A bags world is hashed without the film-grammar options, which cannot
    change it: worlds written before those options existed stay complete (no re-render, and no
    stage downstream sees new inputs)."""
    fields = asdict(cfg)
    if cfg.grammar == "bags":
        fields = {k: v for k, v in fields.items() if k not in FILM_ONLY}
    if not cfg.eval_movies:  # worlds written before eval-only movies existed keep their identity
        fields.pop("eval_movies")
    return config_hash({"demo_world": fields, "seed": seed})


def make_world(out_dir: str | Path, cfg: DemoWorldConfig, seed: int = 0, progress: bool = True,
               workers: int = 0) -> Path:
    """Write the demo world to ``out_dir`` (no-op if already complete with this config).

    Movies are rendered by ``workers`` processes (0 = one per CPU core); each movie depends only on
    (seed, its index), so the result does not depend on the number of workers."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from .progress import progress as progress_bar

    out = Path(out_dir)
    whash = world_hash(cfg, seed)
    meta_path = out / "world.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("hash") == whash:
        return out
    meta_path.unlink(missing_ok=True)
    genre_names = _names(GENRE_NAMES, cfg.num_genres, "genre")
    places = make_places(cfg, seed)
    genre_places = make_genres(cfg, seed)
    film, genre_types, extra = None, None, {}
    if cfg.grammar == "film":
        film = (make_setups(cfg, seed, places), make_cast(cfg, seed))
        genre_types = make_genre_scene_types(cfg, seed)
        extra = {"scene_types": SCENE_TYPES, "genre_scene_type_distribution": np.round(genre_types, 4).tolist(),
                 "setups": film[0], "cast": [asdict(c) for c in film[1]]}
    # eval-only movies come after the others: the others' plans, logs, splits and synopses are unchanged
    plans = [plan_movie(i, cfg, seed, genre_places, genre_types) for i in range(cfg.num_movies + cfg.eval_movies)]
    workers = workers or min(len(plans), os.cpu_count() or 1)
    jobs = [(plan, i, cfg, seed, places, out / "videos" / f"{plan.movie_id}.mp4", film)
            for i, plan in enumerate(plans)]
    bar = progress_bar(total=len(plans), desc="demo world", unit="movie", disable=not progress)
    gt_rows = []
    if workers == 1:
        for job in jobs:
            gt_rows += render_movie(*job)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for rows in pool.map(_render_job, jobs):  # results come back in movie order
                gt_rows += rows
                bar.update()
    bar.close()

    rng = np.random.default_rng([seed, 4])
    splits = _split_of(rng, cfg.num_movies, cfg) + ["eval"] * cfg.eval_movies
    with atomic_path(out / "catalogue.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movie_id", "video", "title", "genres", "synopsis", "split"])
        for plan, split in zip(plans, splits):
            w.writerow([plan.movie_id, f"videos/{plan.movie_id}.mp4", plan.title,
                        "|".join(genre_names[g] for g in plan.genres),
                        make_synopsis(plan, cfg, rng, genre_names, places), split])
    with atomic_path(out / "watch_logs.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "movie_id", "timestamp"])
        w.writerows(make_watch_logs(cfg, seed, plans[:cfg.num_movies]))  # nobody watches an eval-only movie
    with atomic_path(out / "ground_truth" / "shots.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(gt_rows[0]))
        w.writeheader()
        w.writerows(gt_rows)
    write_json(out / "ground_truth" / "movies.json", {
        p.movie_id: {"title": p.title, "genres": [genre_names[g] for g in p.genres],
                     "look": asdict(p.look), "split": s,
                     "scenes": [{"place": sc["place"], "num_shots": len(sc["shots"]),
                                 **({"type": sc["type"], "characters": [film[1][c].name for c in sc["characters"]]}
                                    if film else {})} for sc in p.scenes],
                     **({"cast": [film[1][c].name for c in p.characters]} if film else {})}
        for p, s in zip(plans, splits)})
    write_json(meta_path, {
        "hash": whash, "seed": seed, "config": asdict(cfg), "genres": genre_names,
        "places": [asdict(p) for p in places],
        "genre_place_distribution": np.round(genre_places, 4).tolist(), **extra,
        "counts": {"movies": len(plans), "shots": len(gt_rows),
                   "frames": int(sum(r["end_frame"] - r["start_frame"] for r in gt_rows))},
    })
    return out


def detected_places(world_dir: str | Path, shots_index: str | Path) -> dict[str, list[int]] | None:
    """The ground-truth place of every *detected* shot of a demo world's movies (the place covering
    most of its frames), from ``world_dir/ground_truth/shots.csv`` and a run's ``shots/index.parquet``;
    None where the world has no ground truth (a user's catalogue)."""
    import pyarrow.parquet as pq

    truth_file = Path(world_dir) / "ground_truth" / "shots.csv"
    if not truth_file.is_file():
        return None
    truth: dict[str, list[tuple[int, int, int]]] = {}
    with open(truth_file, newline="") as f:
        for r in csv.DictReader(f):
            truth.setdefault(r["movie_id"], []).append((int(r["start_frame"]), int(r["end_frame"]), int(r["place"])))
    out: dict[str, list[int]] = {}
    for r in pq.read_table(shots_index, columns=["movie_id", "start_frame", "end_frame"]).to_pylist():
        cover: dict[int, int] = {}
        for a, b, place in truth.get(r["movie_id"], []):
            cover[place] = cover.get(place, 0) + max(0, min(r["end_frame"], b) - max(r["start_frame"], a))
        if cover:
            out.setdefault(r["movie_id"], []).append(max(sorted(cover), key=lambda p: cover[p]))
    return out


def write_demo_tasks(world_dir: str | Path, out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Evaluation tasks from a demo world's ground truth, in the task-CSV format of ``m2s evaluate``
    (task, kind, movie_id, start_shot, end_shot, label, split): every ground-truth scene of the
    movies *outside* the pretraining split (catalogue split val/test/exclude) is one clip.

    * ``place.csv`` — classification: the scene's place;
    * ``genre.csv`` — multi-label: the movie's genres (``|``-joined);
    * ``boundary.csv`` — binary: every 4-shot window [t−2, t+2) of those movies, 1 when shot t
      starts a new scene (scene-boundary detection from 4-shot windows, as in the paper).

    Film-grammar worlds add ``scene_type.csv`` (classification: establishing / dialogue /
    montage) and ``characters.csv`` (multi-label: the actors seen in the scene; scenes with
    characters only), leave montages out of ``place.csv`` (a montage has no one place), and write
    the order tasks of :mod:`movies2scenes.eval.order` (``arrow``, ``shuffled``, ``coverage``,
    ``establishing``: the same shots in every class, in the ``shots`` column's order).

    A world with eval-only movies (``demo_world.eval_movies``) takes its clips from those alone;
    otherwise from every movie outside the train split. The ``split`` column (20 % val and 20 % test
    of the movies, seeded) is written for older readers; ``m2s evaluate`` cross-validates by movie."""
    world, out = Path(world_dir), Path(out_dir)
    info = json.loads((world / "world.json").read_text())
    places = [p["name"] for p in info["places"]]
    with open(world / "catalogue.csv", newline="") as f:
        catalogue = list(csv.DictReader(f))
    held = sorted(r["movie_id"] for r in catalogue if r["split"] == "eval") \
        or sorted(r["movie_id"] for r in catalogue if r["split"] != "train")
    genres = {r["movie_id"]: r["genres"] for r in catalogue}
    order = np.random.default_rng([seed, 31]).permutation(len(held))
    n_val = max(1, int(round(0.2 * len(held)))) if len(held) >= 3 else 0
    n_test = max(1, int(round(0.2 * len(held)))) if len(held) >= 3 else 0
    n_train = len(held) - n_val - n_test
    probe_split = {held[i]: "train" if j < n_train else "val" if j < n_train + n_val else "test"
                   for j, i in enumerate(order)}
    scenes: dict[tuple[str, int], list[tuple[int, int]]] = {}
    scene_info: dict[tuple[str, int], tuple[str, set[str]]] = {}  # film grammar: type, characters
    scene_rows: dict[tuple[str, int], list[dict]] = {}  # film grammar: the ground-truth rows (order tasks)
    with open(world / "ground_truth" / "shots.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["movie_id"] in probe_split:
                key = (r["movie_id"], int(r["scene"]))
                scenes.setdefault(key, []).append((int(r["shot"]), int(r["place"])))
                if "scene_type" in r:
                    scene_rows.setdefault(key, []).append(r)
                    kind, chars = scene_info.setdefault(key, (r["scene_type"], set()))
                    chars.update(c for c in r["characters"].split("|") if c)
    header = ["task", "kind", "movie_id", "start_shot", "end_shot", "label", "split"]
    rows = {"place": [], "genre": [], "boundary": []}
    if scene_info:
        rows |= {"scene_type": [], "characters": []}
    for key, shots in sorted(scenes.items()):
        movie = key[0]
        start, end = min(s for s, _ in shots), max(s for s, _ in shots) + 1
        split = probe_split[movie]
        kind, chars = scene_info.get(key, ("", set()))
        if kind != "montage":
            rows["place"].append(["place", "classification", movie, start, end, places[shots[0][1]], split])
        rows["genre"].append(["genre", "multilabel", movie, start, end, genres[movie], split])
        if scene_info:
            rows["scene_type"].append(["scene_type", "classification", movie, start, end, kind, split])
            if chars:
                rows["characters"].append(["characters", "multilabel", movie, start, end, "|".join(sorted(chars)), split])
    scene_of: dict[str, list[int]] = {}
    for (movie, scene), shots in sorted(scenes.items()):
        for shot, _ in shots:
            scene_of.setdefault(movie, []).append(scene)
    for movie, seq in sorted(scene_of.items()):
        for t in range(2, len(seq) - 1):
            rows["boundary"].append(["boundary", "binary", movie, t - 2, t + 2, int(seq[t] != seq[t - 1]),
                                     probe_split[movie]])
    written = []
    for name, body in rows.items():
        _write_rows(out / f"{name}.csv", header, body)
        written.append(out / f"{name}.csv")
    if scene_rows:
        from .eval.order import order_rows

        for name, body in order_rows(scene_rows, seed).items():
            _write_rows(out / f"{name}.csv", ["task", "kind", "movie_id", "start_shot", "end_shot", "label", "shots"], body)
            written.append(out / f"{name}.csv")
    return written


def _write_rows(path: Path, header: list[str], body: list[list]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(body)
