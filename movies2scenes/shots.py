"""Cut detection and keyframe choice in one sequential pass over a video's frames.

A PySceneDetect detector (Content by default; Adaptive, Histogram, Hash selectable) sees every
frame once, in order. In the same pass we hold the frames of the current shot and, when a cut is
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

DETECTORS = ("content", "adaptive", "histogram", "hash")


def make_detector(name: str, threshold: float | None = None, min_shot_frames: int = 15):
    """A fresh PySceneDetect detector by short name; ``threshold`` None keeps its default."""
    from scenedetect import detectors as d

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
) -> Iterator[Shot]:
    """Yield the shots of a sequence of RGB frames, each with its keyframes, in one pass.

    ``keyframe_size`` = (w, h) resizes keyframes (area interpolation) when it differs from the
    frame size. ``lookahead`` bounds how late a detector may report a cut (frames); memory is at
    most ``max_buffer + lookahead`` keyframe-sized frames. The number of frames seen is the last
    shot's ``end``.
    """
    from scenedetect.common import FrameTimecode

    buffer = _Buffer(max_buffer, lookahead)
    shot_start, index, n_shots = 0, 0, 0

    def resize(img: np.ndarray) -> np.ndarray:
        if keyframe_size is None or (img.shape[1], img.shape[0]) == tuple(keyframe_size):
            return img
        return cv2.resize(img, tuple(keyframe_size), interpolation=cv2.INTER_AREA)

    def close(cut: int) -> Shot:
        nonlocal shot_start, n_shots
        kf_index, kf = _choose(buffer.split(cut), shot_start, cut, keyframes)
        shot = Shot(n_shots, shot_start, cut, kf_index, kf)
        shot_start, n_shots = cut, n_shots + 1
        return shot

    total = 0
    for index, rgb in enumerate(frames):
        total = index + 1
        buffer.add(index, resize(rgb))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # PySceneDetect expects OpenCV's BGR
        for cut in detector.process_frame(FrameTimecode(index, fps), bgr):
            if shot_start < int(cut.frame_num) <= index:
                yield close(int(cut.frame_num))
    if total == 0:
        return
    for cut in detector.post_process(FrameTimecode(total, fps)):
        if shot_start < int(cut.frame_num) < total:
            yield close(int(cut.frame_num))
    yield close(total)


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
