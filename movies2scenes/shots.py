"""Cut detection and keyframe choice in one sequential pass over a video's frames.

A PySceneDetect detector (Content by default; Adaptive, Histogram, Hash selectable) or TransNetV2
(:mod:`movies2scenes.transnet`, the same interface) sees every frame once, in order. In the same
pass we hold the frames of the current shot and, when a boundary is decided, choose that shot's k
keyframes: evenly spaced, frame ``start + floor((i + 0.5) * L / k)`` for i = 0..k-1 of the shot's
L frames outside its transitions (k = 1: the middle frame).

:class:`ShotSplitter` decides each boundary ``delay`` frames after it (the detector's lookahead +
the longest transition span): detectors report cuts late (Adaptive looks ahead, TransNetV2 up to
100 frames), and the post-rules — :class:`FlashRule`, the fade and dissolve merges, the opening
fade-in and closing fade-out, :class:`DissolveFinder` for dissolves the detector missed — need
the frames on both sides. Frames at or after an undecided boundary stay in the buffer for the
next shot, so the delay changes nothing.

Memory is bounded: a shot longer than ``max_buffer + delay`` frames keeps only every 2^j-th of
its older frames (the store is halved whenever it fills); its keyframes are then the retained
frames nearest to the ideal positions. Shorter shots (the normal case) get the exact positions.
The per-frame signals are kept for the same window and around the current shot's start.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

DETECTORS = ("content", "adaptive", "histogram", "hash", "transnetv2")


def make_detector(name: str, threshold: float | None = None, min_shot_frames: int = 15):
    """A fresh detector by short name; ``threshold`` None keeps its default."""
    from scenedetect import detectors as d

    if name == "transnetv2":
        from .transnet import TransNetDetector

        return TransNetDetector(threshold, min_shot_frames)

    classes = {
        "content": (d.ContentDetector, "threshold"),
        "adaptive": (d.AdaptiveDetector, "adaptive_threshold"),
        "histogram": (d.HistogramDetector, "threshold"),
        "hash": (d.HashDetector, "threshold"),
    }
    if name not in classes:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    cls, arg = classes[name]
    kwargs = {"min_scene_len": min_shot_frames}
    if name == "content":
        # SUPPRESS, not PySceneDetect's default MERGE: after a flash (two reports within
        # min_scene_len), MERGE keeps merging until the *next* real cut however far away, and that
        # cut is lost (the 4-frame shot at 409 of the real-footage trailer). Flashes are handled by
        # our own flash test in detect_shots.
        from scenedetect.detector import FlashFilter

        kwargs["filter_mode"] = FlashFilter.Mode.SUPPRESS
    if threshold is not None:
        kwargs[arg] = threshold
    return cls(**kwargs)


def detector_min_shot(detector) -> int:
    """The shortest shot a detector makes: its ``min_scene_len`` (TransNetV2, Adaptive), else what
    PySceneDetect 0.7 keeps privately (Histogram/Hash ``_min_scene_len``, Content's flash filter
    length), else 1."""
    for value in (getattr(detector, "min_scene_len", None), getattr(detector, "_min_scene_len", None),
                  getattr(getattr(detector, "_flash_filter", None), "_filter_length", None)):
        if isinstance(value, int) and value > 0:
            return value
    return 1


def keyframe_positions(start: int, end: int, k: int) -> list[int]:
    """Frame indices of k evenly spaced keyframes in the shot [start, end) (end exclusive)."""
    length = end - start
    return [start + ((2 * i + 1) * length) // (2 * k) for i in range(k)]


@dataclass
class Shot:
    index: int
    start: int  # first frame
    end: int  # one past the last frame
    keyframe_frames: list[int]  # frame indices of the keyframes
    keyframes: np.ndarray  # (k, h, w, 3) uint8 RGB
    transition_in: tuple[int, int] | None = None  # [first, last] frame of the gradual transition into this shot

    @property
    def num_frames(self) -> int:
        return self.end - self.start


class _Buffer:
    """Frames held for the shot in progress.

    The newest ``lookahead`` frames are kept at full density, so that a cut reported up to
    ``lookahead`` frames late still finds every frame of the new shot. Older frames (they belong
    to the current shot for sure) go to a store that keeps every ``stride``-th frame counted from
    the shot start and doubles ``stride`` whenever it holds ``capacity`` frames.
    """

    def __init__(self, capacity: int, lookahead: int):
        self.capacity, self.lookahead = capacity, lookahead
        self.stride, self.origin = 1, 0
        self.old: list[tuple[int, np.ndarray]] = []
        self.recent: collections.deque[tuple[int, np.ndarray]] = collections.deque()

    def add(self, index: int, image: np.ndarray) -> None:
        self.recent.append((index, image))
        if len(self.recent) > self.lookahead:
            item = self.recent.popleft()
            if (item[0] - self.origin) % self.stride == 0:
                self.old.append(item)
            if len(self.old) >= self.capacity:
                self.stride *= 2
                self.old = [it for it in self.old if (it[0] - self.origin) % self.stride == 0]

    def split(self, cut: int) -> list[tuple[int, np.ndarray]]:
        """Frames before ``cut`` (the finished shot); the rest start the next shot."""
        if self.old and self.old[-1][0] >= cut:
            raise RuntimeError(f"cut at frame {cut} reported more than {self.lookahead} frames late; "
                               "raise the lookahead")
        head = self.old + [it for it in self.recent if it[0] < cut]
        self.recent = collections.deque(it for it in self.recent if it[0] >= cut)
        self.old, self.stride, self.origin = [], 1, cut
        return head


SIGNAL_SIZE = (32, 18)  # frames are compared at this size for transition spans and flashes
BLEND_SIZE = (64, 36)  # the dissolve test fits blends at this size (a pan's shift must be visible)
DARK = 16.0  # mean luma (0-255) under which a frame is black (a fade's middle)
FLASH_MAX = 4  # frames: a "cut" followed within this many frames by the pre-cut picture is a flash
SAME_PICTURE = 0.6  # a dissolve's two ends correlate at most this much (else: motion, light or a fade)
BLEND_RESIDUAL = 0.15  # every frame of a dissolve is a blend of its two ends within this × their distance
STEADY = 0.6  # ... and its frame-to-frame changes point, on average, along (end − start) by this cosine
FADE_SECONDS = 4.0  # a fade's ramp into or out of a cut is looked for this far
FADE_DEPTH = 0.2  # ... and counts when the picture dims (or brightens) by at least this fraction


def is_blend(pre: np.ndarray | None, mid: np.ndarray | None, post: np.ndarray | None, tolerance: float) -> bool:
    """Whether ``mid`` is (within ``tolerance`` × their distance) the mean of two clearly different
    frames ``pre`` and ``post``: the middle of a dissolve. Camera motion fails it."""
    if pre is None or mid is None or post is None:
        return False
    apart = float(np.abs(pre - post).mean())
    return apart >= 8.0 and float(np.abs(mid - (pre + post) / 2).mean()) <= tolerance * apart


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two grey pictures; None when either is flat (black, white, one tone)."""
    a, b = a - a.mean(), b - b.mean()
    na, nb = float(np.sqrt((a * a).sum())), float(np.sqrt((b * b).sum()))
    if na < 2.0 * np.sqrt(a.size) or nb < 2.0 * np.sqrt(b.size):  # std below 2 grey levels
        return None
    return float((a * b).sum()) / (na * nb)


def blend_fit(frames: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> tuple[list[float], list[float]]:
    """For each frame f: the weight w of ``a`` in the best blend ``w·a + (1 − w)·b`` (least squares)
    and the mean absolute residual of that blend."""
    d = a - b
    dd = float((d * d).sum()) or 1.0
    weights = [float(((f - b) * d).sum()) / dd for f in frames]
    return weights, [float(np.abs(f - b - w * d).mean()) for f, w in zip(frames, weights)]


def steadiness(frames: list[np.ndarray]) -> float:
    """Mean cosine between each frame-to-frame change and the whole change (last − first): 1 for a
    linear blend, low for motion (its steps point every which way)."""
    whole = (frames[-1] - frames[0]).ravel()
    whole = whole / (float(np.linalg.norm(whole)) or 1.0)
    cos = []
    for f0, f1 in zip(frames, frames[1:]):
        step = (f1 - f0).ravel()
        cos.append(float(step @ whole) / (float(np.linalg.norm(step)) or 1.0))
    return float(np.mean(cos))


class Signals:
    """What the post-rules read of every frame, kept for a bounded window: ``diff[j]`` = mean
    |frame j − frame j−1| and ``small[j]`` at :data:`SIGNAL_SIZE`, ``luma[j]`` its mean, and
    ``fine[j]`` at :data:`BLEND_SIZE` (the dissolve test)."""

    def __init__(self):
        self.diff: dict[int, float] = {}
        self.luma: dict[int, float] = {}
        self.small: dict[int, np.ndarray] = {}
        self.fine: dict[int, np.ndarray] = {}

    def add(self, index: int, rgb: np.ndarray) -> None:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, SIGNAL_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
        prev = self.small.get(index - 1)
        self.diff[index] = float(np.abs(small - prev).mean()) if prev is not None else 0.0
        self.luma[index] = float(small.mean())
        self.small[index] = small
        self.fine[index] = cv2.resize(grey, BLEND_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)

    def forget(self, frames: Iterable[int]) -> None:
        for j in list(frames):
            for store in (self.diff, self.luma, self.small, self.fine):
                store.pop(j, None)


def _ramp(sig: Signals, edge: int, step: int, bound: int, limit: int) -> int:
    """From frame ``edge`` walk away from the cut (``step`` −1: back, +1: forward) while each frame
    is the same picture as its neighbour nearer the cut and no darker (a fade's ramp: a blend with
    black, dimming towards the cut); return the ramp's far end, or ``edge`` when the light changes by
    less than FADE_DEPTH. A plateau of 3 frames ends the ramp."""
    j, plateau = edge, 0
    while (j + step - bound) * step < 0 and abs(j + step - edge) <= limit:
        near, far = sig.small.get(j), sig.small.get(j + step)
        if near is None or far is None:
            break
        rise = sig.luma[j + step] - sig.luma[j]
        r = correlation(near, far)
        if rise < -0.05 or (r if r is not None else 0.0) < 0.98:
            break
        plateau = plateau + 1 if rise <= 0.05 else 0
        if plateau > 2:
            break
        j += step
    j -= step * plateau
    if j == edge or sig.luma[edge] > (1 - FADE_DEPTH) * sig.luma[j]:
        return edge
    return j


def transition_span(sig: Signals, cut: int, lo: int, hi: int, max_len: int, fade_len: int | None = None) \
        -> tuple[int, int]:
    """[first, last] frames around a detected cut that belong to a gradual transition, within [lo, hi):
    frames whose change from the previous frame is well above the typical change inside their own
    shot, or that are black (a fade), contiguous with the cut, at most ``max_len`` on each side, or
    a fade's ramps (the picture dimming into the cut, brightening out of it) up to ``fade_len``.
    A hard cut gives (cut, cut)."""
    diff, luma = sig.diff, sig.luma
    fade_len = max_len if fade_len is None else fade_len

    def threshold(frames: range) -> float:
        """3 × the typical change inside that side's own shot: its motion is not a transition."""
        values = [diff[j] for j in frames if j in diff]
        return max(2.0, 3.0 * float(np.median(values))) if values else 2.0

    low_before, low_after = threshold(range(lo + 1, cut - 2)), threshold(range(cut + 3, hi))

    def busy(j: int, low: float) -> bool:
        return diff.get(j, 0.0) >= low or luma.get(j, 255.0) < DARK

    first = cut
    while first - 1 >= lo and cut - (first - 1) <= max_len and busy(first - 1, low_before):
        first -= 1
    last = cut
    while last + 1 < hi and last + 1 - cut <= max_len and busy(last + 1, low_after):
        last += 1
    if last > cut:  # diff[last] is the change *into* frame last: the first clean frame of the new shot
        last -= 1 if luma.get(last, 255.0) >= DARK else 0
    last = max(last, cut)
    if any(luma.get(j, 255.0) < DARK for j in range(first, last + 1)):
        # a fade through black: its ramps are the frames still dimming into black / brightening out
        # of it, even where a short shot's own typical change is as large as the ramp's
        while first - 1 >= lo and cut - (first - 1) <= fade_len and \
                luma.get(first - 1, 0.0) > luma.get(first, 0.0) + 1.5:
            first -= 1
        while last + 1 < hi and last + 1 - cut <= fade_len and luma.get(last + 1, 0.0) > luma.get(last, 0.0) + 1.5 \
                and luma.get(last + 2, 255.0) > luma.get(last + 1, 0.0) + 1.5:
            last += 1
        return first, last
    if last - first >= 2 and not is_blend(sig.small.get(first - 1), sig.small.get((first + last) // 2),
                                          sig.small.get(last + 1), 0.5):
        first, last = cut, cut  # not a fade and not a dissolve: fast motion around a hard cut
    # a fade that never reaches black: the old picture dimming into the cut, the new one brightening out of it
    ramp_first = _ramp(sig, cut - 1, -1, lo - 1, fade_len) if cut - 1 >= lo and cut - 1 in luma else cut
    ramp_last = _ramp(sig, cut, +1, hi, fade_len) if cut in luma else cut
    if ramp_first < cut - 1:
        first = min(first, ramp_first)
    if ramp_last > cut:
        last = max(last, ramp_last)
    return first, last


def fade_between(luma: dict[int, float], a: int, b: int, tail: bool = False) -> bool:
    """Frames [a, b) are all part of one fade through black: every frame is black (luma < DARK) or
    on a ramp — darker than the frame before it (1.5 levels) until the darkest frame, brighter
    after it; ``tail``: a fade-out to the end (only darkening, ends black)."""
    values = [luma.get(j, 255.0) for j in range(a, b)]
    if not values or min(values) >= DARK or (tail and values[-1] >= DARK):
        return False
    k = len(values) - 1 if tail else int(np.argmin(values))
    falling = all(values[i] < DARK or values[i] < values[i - 1] - 1.5 for i in range(1, k + 1))
    rising = all(values[i] < DARK or values[i] > values[i - 1] + 1.5 for i in range(k + 1, len(values)))
    return falling and rising


SAME_PICTURE = 0.8  # correlation of two mean-removed frames above which they show one picture (a fade scales it)
STRUCTURE = 2.0  # luma std (0-255) under which a frame is too flat to say what picture it shows


def picture_continues(sig: "Signals", c: int, fading_in: bool) -> bool:
    """Whether the picture on the far side of a detector cut at ``c`` is the one fading there — the
    fade-in's picture going on after c (``fading_in``), or the picture before c going on into the
    fade-out — rather than a hard cut to a new picture (issue 42: a dim title fading in, then a cut
    to a bright new shot). Compared by the correlation of the mean-removed frames c − 1 and c where
    the faded side shows a picture; where it is too flat to tell, by the fade going on past c."""
    before, after = sig.small.get(c - 1), sig.small.get(c)
    if before is None or after is None:
        return True  # nothing to compare: as the fade rule alone says
    faded = before if fading_in else after
    if faded.std() >= STRUCTURE and min(before.std(), after.std()) > 0:
        return float(np.corrcoef(before.ravel(), after.ravel())[0, 1]) >= SAME_PICTURE
    if not fading_in:
        return True  # the frame after is black: the fade-out rule's own dimming test decides
    luma = sig.luma  # the frame before is (nearly) black: the fade-in must still be brightening after c
    return c + 1 in luma and luma[c + 1] > luma[c] + 1.5


class FlashRule:
    """A detector's cut at c where frames [c, c + L), L ≤ ``max_len``, are brighter than the frames
    on both sides, which look alike (a camera flash, lightning, a muzzle flash): not a boundary.
    The cut back out of the flash (c + L) is dropped too. For detectors that compare neighbouring
    frames (PySceneDetect's); TransNetV2 was trained with flashes and is not second-guessed."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.until = -1  # the last frame of the flash found last

    def is_flash(self, c: int, sig: Signals) -> bool:
        if c <= self.until:
            return True  # the end of a flash already dropped
        pre, first = sig.small.get(c - 1), sig.small.get(c)
        if pre is None or first is None:
            return False
        jump = float(np.abs(pre - first).mean())
        for length in range(1, self.max_len + 1):
            post = sig.small.get(c + length)
            if post is None:
                return False
            bright = min(sig.luma[j] for j in range(c, c + length))
            if bright > max(sig.luma.get(c - 1, 255.0), sig.luma[c + length]) + 40.0 \
                    and float(np.abs(pre - post).mean()) < min(12.0, 0.4 * jump):
                self.until = c + length
                return True
        return False


class DissolveFinder:
    """Cuts inside dissolves the detector misses, found from the per-frame change as it streams.

    A candidate is a run of 3 or more frames whose change is well above the shot's recent typical
    change (twin comparison). It is a dissolve only with evidence of a transition between two
    different pictures: the frames around the run are not the same picture (correlation at most
    :data:`SAME_PICTURE`, so camera motion, zoom, shake and lighting changes fail) and neither is
    flat (a fade is a blend with black, not a dissolve); every frame of the run is a blend of the two
    (residual within :data:`BLEND_RESIDUAL` × their distance) whose weight moves monotonically from
    one picture to the other, each step of the run heading from one picture to the other (mean
    cosine at least :data:`STEADY`): fast motion between two different pictures fails, and so does
    moving texture. Thresholds from the candidates of the trailer, the demo worlds with and without
    transitions and the precision corpus (bench/RESULTS.md, "Shots you can trust"). The cut is placed in
    the run's middle; ``step`` returns (cut, first, last) when a run ends as a dissolve.
    """

    def __init__(self, fps: float, max_run: int):
        self.max_run = max_run
        self.calm: collections.deque[float] = collections.deque(maxlen=max(8, int(round(fps))))
        self.run_start: int | None = None

    def step(self, index: int, sig: Signals) -> tuple[int, int, int] | None:
        if index == 0:
            return None
        change = sig.diff[index]
        low = max(2.0, 3.0 * float(np.median(self.calm))) if self.calm else 2.0
        if low <= change < 30.0:  # elevated, not a hard cut's spike
            self.run_start = index if self.run_start is None else self.run_start
            return None
        found = None
        if self.run_start is not None:
            found = self.test(self.run_start, index, sig)
            self.run_start = None
        if change < low:
            self.calm.append(change)
        return found

    def test(self, start: int, end: int, sig: Signals) -> tuple[int, int, int] | None:
        """Whether frames [start, end) are a dissolve from frame start − 1 to frame end."""
        if not 3 <= end - start <= self.max_run or not is_dissolve(sig, start, end):
            return None
        return (start + end) // 2, start, end - 1


def is_dissolve(sig: Signals, start: int, end: int) -> bool:
    """Whether frames [start, end) are a dissolve from frame start − 1 to frame end (the tests of
    :class:`DissolveFinder`)."""
    if any(sig.luma.get(j, 255.0) < DARK for j in range(start - 1, end + 1)):
        return False
    a, b = sig.fine.get(start - 1), sig.fine.get(end)
    frames = [sig.fine.get(j) for j in range(start, end)]
    if a is None or b is None or not frames or any(f is None for f in frames):
        return False
    apart = float(np.abs(a - b).mean())
    r = correlation(a, b)
    if apart < 8.0 or r is None or r > SAME_PICTURE:
        return False
    weights, residuals = blend_fit(frames, a, b)
    if max(residuals) > BLEND_RESIDUAL * apart:
        return False
    if any(w2 > w1 + 0.1 for w1, w2 in zip(weights, weights[1:])) or weights[0] - weights[-1] < 0.5:
        return False
    return steadiness([a] + frames + [b]) >= STEADY


def _choose(frames: list[tuple[int, np.ndarray]], start: int, end: int, k: int):
    idx = np.array([f for f, _ in frames])
    chosen = []
    for want in keyframe_positions(start, end, k):
        j = int(np.argmin(np.abs(idx - want)))  # exact when nothing was dropped
        chosen.append(frames[j])
    return [f for f, _ in chosen], np.stack([im for _, im in chosen])


@dataclass
class Boundary:
    frame: int  # first frame of the new shot
    source: str  # "detector" or "dissolve"
    span: tuple[int, int] | None = None  # a dissolve's run of blended frames


class ShotSplitter:
    """Turns a stream of frames into shots: the detector's cuts, checked by the post-rules in frame
    order once every rule can see all it needs, plus (``gradual``) the dissolves it missed.

    A boundary at frame c is decided when frame c + ``delay`` has been seen: by then the detector
    has reported every cut up to c + ``delay − lookahead`` (so no dissolve is added next to a cut the
    detector reports late, and no later report lands inside an already closed shot), the flash test
    sees the frames after c, and spans see their ramps. The rules never move a detector's cut; they
    drop it only when it is a flash inside a shot (:class:`FlashRule`), the second report of one fade
    through black or of one dissolve (every frame since the first report a blend of the pictures on
    either side: :func:`is_dissolve`), a fade-in from black that opens the film, or a fade-out that ends it (black
    after the cut, reached by dimming or shorter than ``min_shot_frames``). ``dropped`` lists every
    boundary not kept, with the reason. A dissolve cut is added only away from every
    detector cut (``min_shot_frames`` and its run ± 3 frames).
    """

    def __init__(self, fps: float, detector, keyframes: int = 1, keyframe_size: tuple[int, int] | None = None,
                 max_buffer: int = 512, lookahead: int = 64, gradual: bool = False, min_shot_frames: int | None = None):
        self.fps, self.detector, self.keyframes, self.keyframe_size = fps, detector, keyframes, keyframe_size
        self.lookahead = max(lookahead, getattr(detector, "lookahead", 0))  # TransNetV2 reports up to a window late
        self.min_shot = max(1, min_shot_frames if min_shot_frames is not None else detector_min_shot(detector))
        self.max_len = max(4, int(round(2 * fps)))  # a transition lasts at most 2 s on each side of its cut
        self.fade_len = max(self.max_len, int(round(FADE_SECONDS * fps)))
        flash_max = max(1, min(FLASH_MAX, lookahead // 4))
        self.flash = None if getattr(detector, "handles_flashes", False) else FlashRule(flash_max)
        self.delay = self.lookahead + flash_max + max(self.min_shot, self.max_len, self.fade_len) + 2
        self.keep_near = max(self.fade_len, 2 * self.max_len) + 2  # signals kept around the current shot's start
        self.buffer = _Buffer(max_buffer, self.delay + 1)
        self.sig = Signals()
        self.finder = DissolveFinder(fps, min(2 * self.max_len, self.lookahead // 2)) if gradual else None
        self.waiting: list[Boundary] = []  # boundaries not decided yet
        self.detector_cuts: list[int] = []  # the detector's recent cuts, kept or not (a dissolve keeps away)
        self.shot_start, self.n_shots, self.total = 0, 0, 0
        self.pending: tuple[int, int] | None = None  # (cut, first frame of its transition) into the current shot
        self.last_source = ""
        self.dropped: list[tuple[int, str, str]] = []  # (frame, source, why) of every boundary not kept
        from scenedetect.common import FrameTimecode

        self.timecode = FrameTimecode  # PySceneDetect's frame position type (imported once, not per frame)

    def push(self, rgb: np.ndarray) -> list[Shot]:
        """Take the next frame; return the shots it lets the splitter decide (often none)."""
        index = self.total
        self.total = index + 1
        self.buffer.add(index, self._resize(rgb))
        self.sig.add(index, rgb)
        if self.finder is not None:
            found = self.finder.step(index, self.sig)
            if found is not None:
                self.waiting.append(Boundary(found[0], "dissolve", (found[1], found[2])))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # PySceneDetect expects OpenCV's BGR
        self._report([int(c.frame_num) for c in self.detector.process_frame(self.timecode(index, self.fps), bgr)],
                     index)
        shots = list(self._decide(index - self.delay))
        self._forget(index - self.delay - self.fade_len - 3)
        return shots

    def finish(self) -> list[Shot]:
        """The stream has ended: the shots still undecided, the last one included."""
        if self.total == 0:
            return []
        self._report([int(c.frame_num) for c in self.detector.post_process(self.timecode(self.total, self.fps))],
                     self.total)
        return [*self._decide(self.total, ending=True), self._close(self.total, last_frame=True)]

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[Shot]:
        """Every shot of a stream of RGB frames, as soon as it is decided."""
        for rgb in frames:
            yield from self.push(rgb)
        yield from self.finish()

    def _report(self, cuts: list[int], index: int) -> None:
        for c in cuts:
            if index - c > self.lookahead:
                raise RuntimeError(f"cut at frame {c} reported more than {self.lookahead} frames late; "
                                   "raise the lookahead")
            self.waiting.append(Boundary(c, "detector"))
            self.detector_cuts.append(c)

    def _decide(self, horizon: int, ending: bool = False) -> Iterator[Shot]:
        """Decide, in frame order, every boundary at or before ``horizon``."""
        ready = sorted((b for b in self.waiting if b.frame <= horizon), key=lambda b: (b.frame, b.source != "detector"))
        if not ready:
            return
        self.waiting = [b for b in self.waiting if b.frame > horizon]
        for b in ready:
            if self._keep(b, ending):
                self.last_source = b.source
                yield self._close(b.frame)
        self.detector_cuts = [c for c in self.detector_cuts if c >= horizon - self.delay]

    def _keep(self, b: Boundary, ending: bool) -> bool:
        why = self._drop_reason(b, ending)
        if why:
            self.dropped.append((b.frame, b.source, why))
        return not why

    def _drop_reason(self, b: Boundary, ending: bool) -> str:
        """Why boundary ``b`` is not a shot boundary ('' when it is)."""
        c, start = b.frame, self.shot_start
        if c == start:
            return "duplicate"
        if not start < c < self.total:
            return "outside the stream"
        if b.source == "detector":
            if self.flash is not None and self.flash.is_flash(c, self.sig):
                return "flash"
            if self.n_shots and self.last_source == "detector" and c - start <= 2 * self.max_len \
                    and fade_between(self.sig.luma, start, c):
                return "fade-middle"  # out to black, then in: one transition, not a shot of black
            if self.n_shots and self.last_source == "detector" and 2 <= c - start <= self.max_len \
                    and is_dissolve(self.sig, start, c):
                return "dissolve-middle"  # both ends of one dissolve reported: not a shot of blended frames
            if not self.n_shots and c <= 2 * self.max_len and self.sig.luma.get(0, 255.0) < DARK \
                    and fade_between(self.sig.luma, 0, c) and picture_continues(self.sig, c, fading_in=True):
                return "fade-in-start"  # the film opens fading in from black (no shot of black before it)
            if ending and self.total - c <= 2 * self.max_len and fade_between(self.sig.luma, c, self.total, tail=True) \
                    and (self.total - c < self.min_shot or self._dimming(c)) \
                    and picture_continues(self.sig, c, fading_in=False):
                return "fade-out-end"  # the film ends fading out to black (not a cut to a black shot of its own)
            return ""
        first, last = b.span
        if c - start < self.min_shot:
            return "dissolve-too-short"
        if any(first - 3 <= d <= last + 3 or abs(d - c) < self.min_shot for d in self.detector_cuts):
            return "dissolve-beside-detector-cut"
        return ""

    def _dimming(self, c: int) -> bool:
        """Whether the picture is dimming around the cut at c (a ramp just before it or after it,
        the cut's own step aside): a fade-out, not a hard cut to black."""
        luma = self.sig.luma
        frames = [j for j in range(c - 3, self.total) if j != c and j - 1 in luma and j in luma]
        return any(luma[j - 1] >= DARK and luma[j] < luma[j - 1] - 1.5 for j in frames)

    def _resize(self, img: np.ndarray) -> np.ndarray:
        size = self.keyframe_size
        if size is None or (img.shape[1], img.shape[0]) == tuple(size):
            return img
        return cv2.resize(img, tuple(size), interpolation=cv2.INTER_AREA)

    def _forget(self, old: int) -> None:
        """Bounded memory: drop signals of frame ``old`` unless they are near the current shot's start."""
        if old >= 0 and abs(old - self.shot_start) > self.keep_near:
            self.sig.forget([old])

    def _close(self, cut: int, last_frame: bool = False) -> Shot:
        """The shot [shot_start, cut): its incoming transition (now that its frames are seen), the
        outgoing one's first frame, and keyframes from the frames outside both."""
        span_in = None
        if self.pending is not None:
            c, first = self.pending
            _, last = transition_span(self.sig, c, self.shot_start, cut, self.max_len, self.fade_len)
            if last > first:
                span_in = (first, last)
        out_first = cut
        if not last_frame:
            out_first, _ = transition_span(self.sig, cut, span_in[1] + 1 if span_in else self.shot_start, cut + 1,
                                           self.max_len, self.fade_len)
        usable = (span_in[1] + 1 if span_in else self.shot_start, out_first)
        if usable[1] - usable[0] < 1:  # the shot is all transition: keep its own middle
            usable = (self.shot_start, cut)
        kf_index, kf = _choose(self.buffer.split(cut), *usable, self.keyframes)
        shot = Shot(self.n_shots, self.shot_start, cut, kf_index, kf, span_in)
        self.shot_start, self.n_shots = cut, self.n_shots + 1
        self.pending = None if last_frame else (cut, out_first)
        self.sig.forget([j for j in self.sig.diff if j < cut - self.keep_near])  # those near the old start
        return shot


def detect_shots(
    frames: Iterable[np.ndarray],
    fps: float,
    detector,
    keyframes: int = 1,
    keyframe_size: tuple[int, int] | None = None,
    max_buffer: int = 512,
    lookahead: int = 64,
    gradual: bool = False,
    min_shot_frames: int | None = None,
) -> Iterator[Shot]:
    """Yield the shots of a sequence of RGB frames, each with its keyframes, in one pass
    (:class:`ShotSplitter`).

    ``keyframe_size`` = (w, h) resizes keyframes (area interpolation) when it differs from the
    frame size. ``lookahead`` bounds how late a detector may report a cut (frames); memory is at
    most ``max_buffer`` + the splitter's ``delay`` keyframe-sized frames. The number of frames seen
    is the last shot's ``end``. ``gradual``: also cut inside dissolves the detector missed
    (:class:`DissolveFinder`), never next to a cut it made. ``min_shot_frames``: the shortest shot a
    dissolve cut may make (default: the detector's ``min_scene_len``).
    """
    yield from ShotSplitter(fps, detector, keyframes, keyframe_size, max_buffer, lookahead, gradual,
                            min_shot_frames).run(frames)


class VideoShots:
    """One video read into shots with a ``shots`` config — the recipe detect-shots and ``m2s embed``
    share: probe (first: a file that is no video is refused before anything else), decode at
    ``work_size`` (or the keyframe size), the configured detector, keyframes at ``keyframe_size`` on
    the short side (:meth:`keyframes_at` another side). Iterating yields the :class:`Shot` s in one
    pass; :meth:`times` gives the presentation times of the frames read."""

    def __init__(self, path, cfg):
        from .video import FrameReader, probe, scaled_size

        self.cfg = cfg
        self.info = probe(path)
        work = scaled_size(self.info.width, self.info.height, cfg.work_size or cfg.keyframe_size)
        self.reader = FrameReader(path, work, cfg.decode_threads, cfg.decoder, self.info.container)
        self.keyframes_at(cfg.keyframe_size)

    def keyframes_at(self, side: int) -> None:
        """Keyframes at ``side`` px on the short side (the aspect kept)."""
        from .video import scaled_size

        self.keyframe_size = scaled_size(self.info.width, self.info.height, side)

    def __iter__(self) -> Iterator[Shot]:
        cfg = self.cfg
        detector = make_detector(cfg.detector, cfg.threshold, cfg.min_shot_frames)
        lookahead = max(64, 4 * cfg.min_shot_frames)  # > any detector's reporting delay
        yield from detect_shots(iter(self.reader), self.info.fps, detector, cfg.keyframes, self.keyframe_size,
                                cfg.max_buffer_frames, lookahead, cfg.gradual, cfg.min_shot_frames)

    def times(self, total: int) -> np.ndarray:
        """(total + 1,) presentation times of the frames read (exact on variable frame rate), or
        frame / fps where the decoder's times do not cover them."""
        times = self.reader.times
        return times if times is not None and len(times) == total + 1 else np.arange(total + 1) / self.info.fps


def declared_slack(declared: int, fps: float) -> int:
    """How many frames fewer than its container declares a video may decode and still be whole:
    declared counts are often a few frames off on real files (edit lists, B-frame padding, a last
    packet with no picture) — up to 1 s of frames or 5 %, whichever is smaller, and at least 3."""
    return max(3, int(min(round(fps), 0.05 * declared)))


def check_decoded(total: int, info, cfg) -> str | None:
    """The rules every decoded video must pass (detect-shots and ``m2s embed`` alike): at least
    ``cfg.min_video_frames`` frames, and no fewer than the container declares beyond
    :func:`declared_slack`, and — where the container declares no frame count (Matroska, WebM,
    MPEG-TS) — not fewer than 90 % of its declared duration × fps (loose: variable frame rate makes
    that an estimate): otherwise :class:`~movies2scenes.video.VideoError` naming the reason. A
    shortfall within the slack returns a warning naming both numbers (the video is used)."""
    from .video import VideoError

    if total < cfg.min_video_frames:
        raise VideoError(f"only {total} frame(s) decoded; at least {cfg.min_video_frames} "
                         "are needed (shots.min_video_frames)")
    declared = info.frames_hint
    if declared and total < declared:
        slack = declared_slack(declared, info.fps)
        if total < declared - slack:
            raise VideoError(f"decoded only {total} of the {declared} frames the container declares "
                             f"(truncated or damaged; up to {slack} fewer would be accepted)")
        return (f"decoded {total} of the {declared} frames the container declares ({declared - total} fewer, "
                f"within the {slack} accepted for edit lists and padding); used as decoded")
    expected = getattr(info, "duration", 0.0) * info.fps
    if not declared and expected and total < 0.9 * expected - 2:
        raise VideoError(f"decoded only {total} frames ({total / info.fps:.2f} s) of the {info.duration:.2f} s "
                         "the container declares (truncated or damaged)")
    return None
