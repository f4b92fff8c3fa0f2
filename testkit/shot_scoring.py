"""Shot boundaries against ground truth: hard cuts within ±TOL frames, gradual transitions found
and their spans matched (:func:`score`); our streaming TransNetV2 detector against the wheel's own
whole-file prediction (:func:`transnet_against_reference`)."""

from __future__ import annotations

import numpy as np

from movies2scenes.shots import ShotSplitter
from movies2scenes.video import FrameReader, probe, scaled_size

TOL = 2  # frames a detected cut may be off


def score(found_starts: list[int], keyframes: list[int], truth: dict, spans: list | None = None) -> dict:
    """Hard cuts: a detected boundary within ±TOL of a true cut. Gradual transitions, two ways:
    *found* — a boundary inside a true span (±TOL) that no hard cut claimed; *span P/R/F1* — the
    transition spans we record (``Shot.transition_in``) against the true spans, matched one to one
    by overlap (±TOL)."""
    cuts, gradual, flashes = truth["cuts"], truth["gradual"], truth["flashes"]
    det = [s for s in found_starts if s > 0]
    used: set[int] = set()
    tp = 0
    for c in cuts:
        m = [d for d in det if abs(d - c) <= TOL and d not in used]
        if m:
            used.add(m[0])
            tp += 1
    grad_hit = 0
    for a, b in gradual:
        m = [d for d in det if a - TOL <= d <= b + TOL and d not in used]
        if m:
            used.update(m)
            grad_hit += 1
    flash_fp = sum(1 for d in det if d not in used and any(a - TOL <= d <= b + TOL for a, b in flashes))
    fp = len([d for d in det if d not in used])
    p = tp / max(1, tp + fp)
    r = tp / max(1, len(cuts))
    in_transition = sum(1 for k in keyframes if any(a <= k <= b for a, b in gradual))
    spans = spans or []
    matched: set[int] = set()
    for a, b in gradual:
        m = [i for i, (x, y) in enumerate(spans) if i not in matched and x <= b + TOL and y >= a - TOL]
        if m:
            matched.add(m[0])
    sp = len(matched) / max(1, len(spans))
    sr = len(matched) / max(1, len(gradual))
    return {"spans": len(spans), "spans_matched": len(matched), "span_precision": sp, "span_recall": sr,
            "span_f1": 2 * sp * sr / max(1e-9, sp + sr),"tp": tp, "fp": fp, "cuts": len(cuts), "precision": p, "recall": r,
            "f1": 2 * p * r / max(1e-9, p + r), "gradual_found": grad_hit, "gradual": len(gradual),
            "flash_false_cuts": flash_fp, "keyframes_in_transitions": in_transition}


class Recording:
    """A detector wrapper that records every cut the detector reports (before our post-rules)."""

    def __init__(self, detector):
        self.detector, self.cuts = detector, []
        for name in ("lookahead", "handles_flashes", "min_scene_len"):
            if hasattr(detector, name):
                setattr(self, name, getattr(detector, name))

    def process_frame(self, timecode, frame):
        found = self.detector.process_frame(timecode, frame)
        self.cuts += [int(c.frame_num) for c in found]
        return found

    def post_process(self, timecode):
        found = self.detector.post_process(timecode)
        self.cuts += [int(c.frame_num) for c in found]
        return found


def transnet_against_reference(path: str, model, gradual: bool = True) -> dict:
    """One file: the wheel's ``predict_frames`` + ``predictions_to_scenes`` on our decoded frames
    (48x27, as our detector feeds it) against our streaming detector inside ``detect_shots``
    (min_shot_frames 1: the reference has no minimum). ``reference``: (first, last) frame range in
    which each reference boundary's new shot may start (a transition of frames [i, j] ends a scene at
    i and starts the next at j + 1; we report the frame after the run's peak). ``equal``: the same
    number of cuts, each inside its range; ``removed``: the detector's cuts that are not boundaries
    after our post-rules."""
    import cv2
    import torch

    from movies2scenes.transnet import INPUT_SIZE, TransNetDetector

    info = probe(path)
    size = scaled_size(info.width, info.height, 128)
    frames = list(FrameReader(path, size))
    x = torch.from_numpy(np.stack([cv2.resize(f, INPUT_SIZE, interpolation=cv2.INTER_AREA) for f in frames]))
    single, _ = model.predict_frames(x, quiet=True)
    scenes = model.predictions_to_scenes(single.numpy())
    reference = [(int(e) + 1, int(s2)) for (_, e), (s2, _) in zip(scenes[:-1], scenes[1:])]
    det = Recording(TransNetDetector(None, 1, model=model))
    splitter = ShotSplitter(info.fps, det, 1, None, 512, 64, gradual, 1)
    shots = list(splitter.run(frames))
    ours = sorted(det.cuts)
    equal = len(ours) == len(reference) and all(a <= c <= b + 1 for c, (a, b) in zip(ours, reference))
    starts = {s.start for s in shots}
    why = {c: w for c, src, w in splitter.dropped if src == "detector"}
    return {"frames": len(frames), "reference": reference, "ours": ours, "equal": equal,
            "removed": {c: why.get(c, "?") for c in ours if c not in starts}, "boundaries": sorted(starts - {0})}
