"""Helpers of the tests alone (fixtures live in conftest.py; what bench shares is the testkit package)."""

from __future__ import annotations

from pathlib import Path


def scene_encoder_run(mined_run, dest: Path, *overrides: str) -> tuple[Path, list[str]]:
    """A copy of the ``mined_run`` fixture at ``dest`` without its scene encoder and export, and the
    overrides that run train-scene-encoder there (``overrides`` last)."""
    import shutil

    src, ov = mined_run
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("scene_encoder", "export"))
    return dest, [o for o in ov if not o.startswith("run_dir=")] + [f"run_dir={dest}", *overrides]


def kill_when(args: list[str], cwd: Path, path: Path, timeout: float = 180) -> None:
    """Run ``python -m movies2scenes.cli *args`` and SIGKILL it as soon as ``path`` exists (e.g. a
    checkpoint folder); fails if the command finished first."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "movies2scenes.cli", *args], cwd=cwd,
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


def record_as_written(path: Path) -> None:
    """Record ``path``'s current bytes in its stage's DONE.json, as if the stage had written them
    (tests of what a stage does with bad content that it wrote itself, past the integrity checks)."""
    import json

    from movies2scenes.integrity import file_record

    done = path.parent / "DONE.json"
    rec = json.loads(done.read_text())
    rec["files"][path.name] = file_record(path)
    done.write_text(json.dumps(rec))


def export_matches_features(run, temporal):
    """The exported encoder of ``run`` on pixels against ``temporal`` (the trained temporal head) on
    the stored shot features, two clips of the first movie; returns (clips, from_features)."""
    import numpy as np

    from movies2scenes import load_scene_encoder
    from movies2scenes.artefacts import ShotSamples
    from movies2scenes.evaluation import embed_clips
    from movies2scenes.features import ShotFeatures

    feats = ShotFeatures(run / "shot_features")
    movie = feats.movie_ids[0]
    clips = [(movie, 0, 3), (movie, 1, 5)]
    from movies2scenes.models.factorised import clip_windows, embed_windows

    from_pixels = embed_clips(load_scene_encoder(run / "export"), ShotSamples(run / "shots"), clips, 8)
    # a head trained in context reads each clip in its movie's context on both sides
    from_features = embed_windows(temporal, clip_windows(feats.movie, clips, temporal.context))
    np.testing.assert_allclose(from_pixels, from_features, atol=2e-2 * np.abs(from_features).max())
    return clips, from_features
