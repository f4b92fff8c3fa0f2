"""Cut detection and keyframe choice in one sequential pass over a video's frames.

A PySceneDetect detector (Content by default; Adaptive, Histogram, Hash selectable) or TransNetV2
(:mod:`movies2scenes.transnet`, the same interface) sees every frame once, in order. In the same pass we hold the frames of the current shot and, when a cut is
reported, choose that shot's k keyframes: evenly spaced, frame ``start + floor((i + 0.5) * L / k)``
for i = 0..k-1 of a shot of L frames (k = 1: the middle frame).

Detectors may report a cut a few frames after it happened (Adaptive looks ahead); frames at or
after the reported cut stay in the buffer for the next shot, so the delay changes nothing.

Memory is bounded: a shot longer than ``max_buffer + lookahead`` frames keeps only every 2^j-th
of its older frames (the store is halved whenever it fills); its keyframes are then the retained
frames nearest to the ideal positions. Shorter shots (the normal case) get the exact positions.
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


SIGNAL_SIZE = (32, 18)  # frames are compared at this size for transition spans
DARK = 16.0  # mean luma (0-255) under which a frame is black (a fade's middle)
FLASH_MAX = 4  # frames: a "cut" followed within this many frames by the pre-cut picture is a flash


def is_blend(pre: np.ndarray | None, mid: np.ndarray | None, post: np.ndarray | None, tolerance: float) -> bool:
    """Whether ``mid`` is (within ``tolerance`` × their distance) the mean of two clearly different
    frames ``pre`` and ``post``: the middle of a dissolve. Camera motion fails it."""
    if pre is None or mid is None or post is None:
        return False
    apart = float(np.abs(pre - post).mean())
    return apart >= 8.0 and float(np.abs(mid - (pre + post) / 2).mean()) <= tolerance * apart


def transition_span(diff: dict[int, float], luma: dict[int, float], cut: int, lo: int, hi: int,
                    max_len: int, small: dict[int, np.ndarray] | None = None) -> tuple[int, int]:
    """[first, last] frames around a detected cut that belong to a gradual transition: frames
    whose change from the previous frame is well above the typical change inside their own shot, or
    that are black (a fade), contiguous with the cut, at most ``max_len`` on each side, within
    [lo, hi). A hard cut gives (cut, cut). ``diff[j]``: mean |frame j − frame j−1| at
    :data:`SIGNAL_SIZE`; ``luma[j]``: mean luma of frame j."""
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
        # a fade: its ramps are the frames still dimming into black / brightening out of it, even
        # where a short shot's own typical change is as large as the ramp's
        while first - 1 >= lo and cut - (first - 1) <= max_len and \
                luma.get(first - 1, 0.0) > luma.get(first, 0.0) + 1.5:
            first -= 1
        while last + 1 < hi and last + 1 - cut <= max_len and luma.get(last + 1, 0.0) > luma.get(last, 0.0) + 1.5 \
                and luma.get(last + 2, 255.0) > luma.get(last + 1, 0.0) + 1.5:
            last += 1
        return first, last
    if small is not None and last - first >= 2 and \
            not is_blend(small.get(first - 1), small.get((first + last) // 2), small.get(last + 1), 0.5):
        return cut, cut  # not a fade and not a dissolve: fast motion around a hard cut
    return first, last


def _choose(frames: list[tuple[int, np.ndarray]], start: int, end: int, k: int):
    idx = np.array([f for f, _ in frames])
    chosen = []
    for want in keyframe_positions(start, end, k):
        j = int(np.argmin(np.abs(idx - want)))  # exact when nothing was dropped
        chosen.append(frames[j])
    return [f for f, _ in chosen], np.stack([im for _, im in chosen])


def detect_shots(
    frames: Iterable[np.ndarray],
    fps: float,
    detector,
    keyframes: int = 1,
    keyframe_size: tuple[int, int] | None = None,
    max_buffer: int = 512,
    lookahead: int = 64,
    gradual: bool = False,
) -> Iterator[Shot]:
    """Yield the shots of a sequence of RGB frames, each with its keyframes, in one pass.

    ``keyframe_size`` = (w, h) resizes keyframes (area interpolation) when it differs from the
    frame size. ``lookahead`` bounds how late a detector may report a cut (frames); memory is at
    most ``max_buffer + lookahead`` keyframe-sized frames. The number of frames seen is the last
    shot's ``end``. ``gradual``: also cut inside dissolves the detector missed — a run of 3 or more
    frames whose change is well above the shot's typical change and whose middle frame is the mean
    of the frames around the run (twin comparison with a blend test; camera motion fails the test).
    """
    from scenedetect.common import FrameTimecode

    lookahead = max(lookahead, getattr(detector, "lookahead", 0))  # TransNetV2 reports up to a window late
    buffer = _Buffer(max_buffer, lookahead)
    shot_start, index, n_shots = 0, 0, 0
    diff: dict[int, float] = {}
    luma: dict[int, float] = {}
    max_len = max(4, int(round(2 * fps)))  # a transition lasts at most 2 s on each side of its cut
    prev_small = None
    smalls: dict[int, np.ndarray] = {}  # signal-size frames near cuts (the dissolve test)
    pending: tuple[int, int] | None = None  # (cut, first frame of its transition) into the current shot
    run_start: int | None = None  # first frame of the current run of elevated change (gradual)
    calm: collections.deque[float] = collections.deque(maxlen=max(8, int(round(fps))))  # recent ordinary changes
    last_gradual: int | None = None
    held: list[int] = []  # the detector's cuts, held flash_max frames for the flash test
    waiting: list[int] = []  # our dissolve cuts, waiting for earlier held cuts
    flash_max = max(1, min(FLASH_MAX, lookahead // 4))
    flash_until = -1

    def flash_length(c: int) -> int:
        """L > 0 when frames [c, c + L) are a flash inside one shot: brighter than the frames on
        both sides, which look alike (a camera flash, lightning, a muzzle flash); 0 otherwise."""
        pre, first = smalls.get(c - 1), smalls.get(c)
        if pre is None or first is None:
            return 0
        jump = float(np.abs(pre - first).mean())
        for length in range(1, flash_max + 1):
            post = smalls.get(c + length)
            if post is None:
                return 0
            bright = min(luma.get(j, 0.0) for j in range(c, c + length))
            if bright > max(luma.get(c - 1, 255.0), luma.get(c + length, 255.0)) + 40.0 \
                    and float(np.abs(pre - post).mean()) < min(12.0, 0.4 * jump):
                return length
        return 0

    def fade_between(a: int, b: int, tail: bool = False) -> bool:
        """Frames [a, b) are all part of one fade through black: every frame is black (luma <
        DARK) or on a ramp — darker than the frame before it (1.5 levels) until the darkest frame,
        brighter after it; ``tail``: a fade-out to the end (only darkening, ends black)."""
        values = [luma.get(j, 255.0) for j in range(a, b)]
        if not values or min(values) >= DARK or (tail and values[-1] >= DARK):
            return False
        k = len(values) - 1 if tail else int(np.argmin(values))
        falling = all(values[i] < DARK or values[i] < values[i - 1] - 1.5 for i in range(1, k + 1))
        rising = all(values[i] < DARK or values[i] > values[i - 1] + 1.5 for i in range(k + 1, len(values)))
        return falling and rising

    def release(index: int, ready: list[int], gradual_cuts: list[int], ending: bool = False):
        """Yield the shots closed by the detector's cuts that passed the flash test and by our
        dissolve cuts, in frame order. ``ending``: the stream has ended; black frames after the last
        cut are the end of a fade-out, not a shot."""
        nonlocal held, flash_until, last_gradual
        held = [c for c in held if c not in ready]
        kept = []
        for c in sorted(set(ready)):
            if c <= flash_until:
                continue  # the end of a flash already dropped
            length = flash_length(c)
            if length:
                flash_until = c + length
                continue
            kept.append(c)
        for cut in sorted(set(kept + gradual_cuts)):
            if cut in gradual_cuts and any(abs(cut - f) <= 3 for f in kept + held):
                continue  # the detector has it already
            if cut not in gradual_cuts and last_gradual is not None and 0 <= cut - last_gradual <= 3:
                continue  # the detector's late report of the dissolve we cut already
            if shot_start < cut <= index and cut < total:
                if n_shots and cut - shot_start <= 2 * max_len and fade_between(shot_start, cut):
                    continue  # the middle of a fade (out to black, then in): one transition, not a shot
                if ending and total - cut <= 2 * max_len and fade_between(cut, total, tail=True):
                    continue  # the film ends fading out to black
                if cut in gradual_cuts:
                    last_gradual = cut
                yield close(cut)

    def dissolve_cut(start: int, end: int) -> int | None:
        """The middle of [start, end) if those frames are a dissolve (see ``gradual``)."""
        if not 3 <= end - start <= 2 * max_len or end - start > lookahead // 2:
            return None
        if any(luma.get(j, 255.0) < DARK for j in range(start - 1, end + 1)):
            return None  # a fade's ramp (a blend with black): the detector and the span handle fades
        if not is_blend(smalls.get(start - 1), smalls.get((start + end - 1) // 2), smalls.get(end), 0.35):
            return None
        return (start + end) // 2

    def resize(img: np.ndarray) -> np.ndarray:
        if keyframe_size is None or (img.shape[1], img.shape[0]) == tuple(keyframe_size):
            return img
        return cv2.resize(img, tuple(keyframe_size), interpolation=cv2.INTER_AREA)

    def close(cut: int, last_frame: bool = False) -> Shot:
        """The shot [shot_start, cut): its incoming transition (now that its frames are seen), the
        outgoing one's first frame, and keyframes from the frames outside both."""
        nonlocal shot_start, n_shots, pending
        span_in = None
        if pending is not None:
            c, first = pending
            _, last = transition_span(diff, luma, c, shot_start, cut, max_len, smalls)
            if last > first:
                span_in = (first, last)
        out_first = cut
        if not last_frame:
            out_first, _ = transition_span(diff, luma, cut, span_in[1] + 1 if span_in else shot_start, cut + 1,
                                           max_len, smalls)
        usable = (span_in[1] + 1 if span_in else shot_start, out_first)
        if usable[1] - usable[0] < 1:  # the shot is all transition: keep its own middle
            usable = (shot_start, cut)
        kf_index, kf = _choose(buffer.split(cut), *usable, keyframes)
        shot = Shot(n_shots, shot_start, cut, kf_index, kf, span_in)
        shot_start, n_shots = cut, n_shots + 1
        pending = None if last_frame else (cut, out_first)
        for j in [j for j in diff if j < cut - max_len - 2]:  # bounded memory: only near the current shot
            del diff[j]
            luma.pop(j, None)
        for j in [j for j in smalls if j < cut - max_len - 2 or (cut + max_len + 2 < j < index - lookahead - 2 * max_len - 4)]:
            del smalls[j]
        return shot

    total = 0
    for index, rgb in enumerate(frames):
        total = index + 1
        buffer.add(index, resize(rgb))
        small = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), SIGNAL_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
        diff[index] = float(np.abs(small - prev_small).mean()) if prev_small is not None else 0.0
        luma[index] = float(small.mean())
        prev_small = small
        smalls[index] = small
        cuts_now = []
        if gradual and index > 0:
            low = max(2.0, 3.0 * float(np.median(calm))) if calm else 2.0
            if diff[index] >= low and diff[index] < 30.0:  # elevated, not a hard cut's spike
                run_start = index if run_start is None else run_start
            else:
                if run_start is not None:
                    c = dissolve_cut(run_start, index)
                    if c is not None and c - shot_start >= 2:
                        cuts_now.append(c)
                    run_start = None
                if diff[index] < low:
                    calm.append(diff[index])
        old = index - lookahead - 2 * max_len - 4  # keep the recent frames and those after the pending cut
        if old in smalls and not (pending and pending[0] - max_len - 2 <= old <= pending[0] + max_len + 2):
            del smalls[old]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # PySceneDetect expects OpenCV's BGR
        held += [int(cut.frame_num) for cut in detector.process_frame(FrameTimecode(index, fps), bgr)]
        waiting += cuts_now
        ready = [c for c in held if c + flash_max <= index]
        unready = [c for c in held if c + flash_max > index]
        go = [g for g in waiting if all(g < h for h in unready)]  # frame order across both kinds
        waiting = [g for g in waiting if g not in go]
        yield from release(index, ready, go)
    if total == 0:
        return
    held += [int(cut.frame_num) for cut in detector.post_process(FrameTimecode(total, fps))]
    yield from release(total - 1, list(held), waiting, ending=True)
    yield close(total, last_frame=True)


def check_decoded(total: int, info, cfg) -> None:
    """The rules every decoded video must pass (detect-shots and ``m2s embed`` alike): at least
    ``cfg.min_video_frames`` frames, and no fewer than the container declares (2 % or 2 frames of
    slack), and — where the container declares no frame count (Matroska, WebM, MPEG-TS) — not fewer
    than 90 % of its declared duration × fps (loose: variable frame rate makes that an estimate):
    otherwise :class:`~movies2scenes.video.VideoError` naming the reason."""
    from .video import VideoError

    if total < cfg.min_video_frames:
        raise VideoError(f"only {total} frame(s) decoded; at least {cfg.min_video_frames} "
                         "are needed (shots.min_video_frames)")
    if info.frames_hint and total < info.frames_hint - max(2, 0.02 * info.frames_hint):
        raise VideoError(f"decoded only {total} of the {info.frames_hint} frames the container "
                         "declares (truncated or damaged)")
    expected = getattr(info, "duration", 0.0) * info.fps
    if not info.frames_hint and expected and total < 0.9 * expected - 2:
        raise VideoError(f"decoded only {total} frames ({total / info.fps:.2f} s) of the {info.duration:.2f} s "
                         "the container declares (truncated or damaged)")
