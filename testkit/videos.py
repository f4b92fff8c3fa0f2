"""Small inputs written at test time: videos (any codec PyAV writes), an audio-only file, the bad
inputs every video stage must survive, and catalogues."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: list[np.ndarray], fps: int = 12, codec: str = "h264", **opts) -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=22050)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 22050
        for _ in range(10):
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_bad_inputs(folder: Path, good_video: Path) -> dict[str, Path]:
    """The bad inputs the shots stage must survive, plus a good video at an awkward path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    out["zero"] = folder / "zero.mp4"
    out["zero"].write_bytes(b"")
    out["text"] = folder / "notes.mp4"
    out["text"].write_text("this is not a video, it only has the name of one\n" * 20)
    data = good_video.read_bytes()
    out["truncated"] = folder / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["audio"] = write_audio_only(folder / "audio_only.mp4")
    rng = np.random.default_rng(0)
    out["one_frame"] = write_video(folder / "one_frame.mp4", [rng.integers(0, 255, (64, 96, 3), np.uint8)])
    out["missing"] = folder / "does_not_exist.mp4"
    weird = folder / "dir with spaces" / "Amélie à Paris – 東京.mp4"
    weird.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(good_video, weird)
    out["weird_path"] = weird
    return out


def write_catalogue(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["movie_id", "video", "title", "genres", "synopsis", "split"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in w.fieldnames})
    return path
