"""Frame-accurate sequential decoding at a reduced working resolution.

decord decodes (and scales, inside ffmpeg) every frame in order with ``VideoReader.next()``; we
never seek, because decord's random access can return the wrong frame on some containers (e.g.
mpeg4 in AVI). PyAV probes the container first: it is cheap and turns unreadable inputs (empty,
not a video, audio only) into a readable reason instead of a decoder crash.
"""

from __future__ import annotations

from collections.abc import Iterator
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoError(RuntimeError):
    """A video that cannot be used; the message is the reason, fit for failures.jsonl."""


@dataclass(frozen=True)
class VideoInfo:
    width: int  # display size: after the container's rotation (a portrait phone video is portrait)
    height: int
    fps: float
    frames_hint: int  # container's frame count (0 when unknown); the decode count is the truth
    codec: str
    rotation: int = 0  # display rotation in degrees (0, 90, 180, 270); decord applies it when decoding
    container: str = ""
    duration: float = 0.0  # container-declared duration in seconds (0 when unknown)


# Demuxers that read *other* files or URLs named inside the input (playlists, manifests, concat
# lists, image-sequence patterns, session descriptions): opening one would read whatever it points
# at — local files included. Only self-contained container files are videos here.
REFUSED_FORMATS = frozenset({
    "hls", "applehttp", "dash", "concat", "ffconcat", "image2", "image2pipe", "tee", "sdp", "rtsp", "rtp",
    "webm_dash_manifest", "subfile", "data", "lavfi", "mpjpeg", "smjpeg", "ffmetadata", "tedcaptions",
    "jpeg_pipe", "png_pipe", "bin", "tty", "imf", "libmodplug",
})


def _refused_format(name: str) -> str | None:
    return next((part for part in name.split(",") if part in REFUSED_FORMATS or part.endswith("_pipe")), None)


def _rotation(container, stream) -> int:
    """Display rotation of the first decoded frame (the container's display matrix), in degrees."""
    try:
        frame = next(container.decode(stream))
    except Exception:  # damage is reported by the decode pass itself
        return 0
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360


def probe(path: str | Path) -> VideoInfo:
    """Container facts of ``path`` or :class:`VideoError` with a readable reason.

    Only regular files are opened (a FIFO or device would block), through FFmpeg's ``file``
    protocol only, and containers whose demuxer reads other files (HLS/DASH playlists, concat
    lists, image patterns, ...) are refused: a catalogue entry can never make us read anything but
    itself."""
    import av

    path = Path(os.path.abspath(path))  # absolute: "concat:a|b" or "http:..." can never be a protocol
    if not path.exists():
        raise VideoError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        with av.open(str(path), options={"protocol_whitelist": "file", "enable_drefs": "0"}) as container:
            refused = _refused_format(container.format.name)
            if refused:
                raise VideoError(f"refused: a {refused!r} file (playlist, list or pattern that makes the "
                                 "demuxer read other files); give the video file itself")
            streams = container.streams.video
            if not streams:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise VideoError(f"no video stream (streams found: {', '.join(kinds)})")
            s = streams[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            fps = float(rate) if rate else 0.0
            width, height = s.codec_context.width, s.codec_context.height
            rotation = _rotation(container, s)
            if rotation in (90, 270):
                width, height = height, width
            duration = 0.0
            if s.duration and s.time_base:
                duration = float(s.duration * s.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            info = VideoInfo(width, height, fps, int(s.frames or 0), s.codec_context.name, rotation,
                             container.format.name, duration if math.isfinite(duration) and duration > 0 else 0.0)
    except VideoError:
        raise
    except av.error.InvalidDataError:
        raise VideoError("not a readable video container (invalid data: damaged, truncated or not a video)") from None
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot open video: {e.strerror or e}") from None
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"video stream has no frame size ({info.width}x{info.height})")
    if not info.fps > 0:
        raise VideoError("video stream has no frame rate")
    return info


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side ``short_side`` and the aspect ratio kept (both even, >= 2)."""
    scale = short_side / min(width, height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def iter_frames(path: str | Path, size: tuple[int, int], threads: int = 2) -> Iterator[np.ndarray]:
    """Every frame of ``path`` in order, as (h, w, 3) uint8 RGB at ``size`` = (w, h).

    Strictly sequential (``next()``), one decoder pass. Raises :class:`VideoError` if decoding
    fails before the end of the stream.
    """
    import decord

    w, h = size
    try:
        reader = decord.VideoReader(os.path.abspath(path), width=w, height=h, num_threads=threads)
    except decord.DECORDError as e:
        raise VideoError(f"decoder cannot open the video: {_first_line(e)}") from None
    index = 0
    while True:
        try:
            frame = reader.next()
        except StopIteration:
            return
        except decord.DECORDError as e:
            raise VideoError(f"decoding failed at frame {index}: {_first_line(e)}") from None
        yield frame.asnumpy()
        index += 1


def frame_times(path: str | Path) -> np.ndarray:
    """Presentation times in seconds of the frames :func:`iter_frames` yields, as N + 1 boundaries
    (frame i spans ``[t[i], t[i+1])``), from the decoder's own frame index: no frame is decoded and
    nothing is seeked. Exact on variable-frame-rate video, where ``index / fps`` drifts."""
    import decord

    try:
        reader = decord.VideoReader(os.path.abspath(path), width=32, height=32, num_threads=1)
        n = len(reader)
        spans = np.asarray(reader.get_frame_timestamp(np.arange(n)), np.float64).reshape(n, 2) if n else np.zeros((0, 2))
    except decord.DECORDError as e:
        raise VideoError(f"decoder cannot read the frame times: {_first_line(e)}") from None
    return np.concatenate([spans[:, 0], spans[-1:, 1]]) if n else np.zeros(1)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
