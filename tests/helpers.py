"""Helpers shared by the tests (fixtures live in conftest.py)."""

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


def kill_when(args: list[str], cwd: Path, path: Path, timeout: float = 180) -> None:
    """Run ``python -m pipelines.cli *args`` and SIGKILL it as soon as ``path`` exists (e.g. a
    checkpoint folder); fails if the command finished first."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{args[0]} finished before it could be killed"


TINY_SCENE = [
    "scene_encoder.model.img_size=32", "scene_encoder.model.patch_size=8", "scene_encoder.model.embed_dim=48",
    "scene_encoder.model.depth=2", "scene_encoder.model.num_heads=3", "scene_encoder.moco.dim=16",
    "scene_encoder.moco.mlp_hidden=32", "scene_encoder.moco.queue_size=32", "scene_encoder.train.batch_size=4",
    "scene_encoder.train.num_workers=0", "scene_encoder.train.checkpoint_every=2",
    "scene_encoder.train.warmup_epochs=1", "scene_encoder.train.log_every=1",
    "scene_pairs.shots_per_scene=3",
]


class LateDetector:
    """A detector that reports each of the given cuts ``delay`` frames after it happened, like a
    look-ahead detector (TransNetV2 reports up to ``lookahead`` = 100 frames late)."""

    def __init__(self, cuts, delay, lookahead: int = 0):
        self.cuts, self.delay = cuts, delay
        if lookahead:
            self.lookahead = lookahead

    def process_frame(self, timecode, frame):
        from scenedetect.common import FrameTimecode

        n = timecode.frame_num
        return [FrameTimecode(c, 10.0) for c in self.cuts if c + self.delay == n]

    def post_process(self, timecode):
        from scenedetect.common import FrameTimecode

        n = timecode.frame_num
        return [FrameTimecode(c, 10.0) for c in self.cuts if c + self.delay >= n]


def tiny_export(folder: Path) -> Path:
    """A tiny exported scene encoder (ViT-tiny, 32 px, 3 shots per scene) under ``folder/export``."""
    import torch

    from movies2scenes.config import ViTConfig
    from movies2scenes.export import export_scene_encoder
    from movies2scenes.models.folder import save_vit
    from movies2scenes.models.vit import create_scene_vit

    torch.manual_seed(0)
    tiny = ViTConfig(arch="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    save_vit(create_scene_vit(tiny).vit, tiny, folder / "enc", shots_per_scene=3)
    export_scene_encoder(folder / "enc", folder / "export", {"name": "test"})
    return folder / "export"
