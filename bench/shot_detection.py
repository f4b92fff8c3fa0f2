"""Shot detection on real footage with known edits (tests/footage.py): every detector we offer,
with PySceneDetect's default threshold and ours, on every encoding of the trailer.

    python bench/shot_detection.py [--detectors content adaptive histogram hash] [--json OUT]

Per detector × threshold × file: hard cuts P/R/F1 (a detected cut within ±2 frames of a true one),
gradual transitions found (a detected cut inside the span ±2), false cuts at flashes, keyframes
inside a transition, frames/s of decode + detection. The last table sums over the files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import footage  # noqa: E402

from movies2scenes.shots import detect_shots, make_detector  # noqa: E402
from movies2scenes.video import FrameReader, probe, scaled_size  # noqa: E402

TOL = 2
SETTINGS = {  # detector → thresholds to try (None = PySceneDetect's default)
    "content": [None, 22.0],
    "adaptive": [None, 2.0],
    "histogram": [None, 0.1],
    "hash": [None, 0.3],
}


def score(found_starts: list[int], keyframes: list[int], truth: dict) -> dict:
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
    return {"tp": tp, "fp": fp, "cuts": len(cuts), "precision": p, "recall": r,
            "f1": 2 * p * r / max(1e-9, p + r), "gradual_found": grad_hit, "gradual": len(gradual),
            "flash_false_cuts": flash_fp, "keyframes_in_transitions": in_transition}


def run_one(path: str, detector: str, threshold, min_shot_frames: int, gradual: bool) -> tuple[dict, float]:
    info = probe(path)
    size = scaled_size(info.width, info.height, 128)
    t = time.perf_counter()
    reader = FrameReader(path, size)
    shots = list(detect_shots(iter(reader), info.fps, make_detector(detector, threshold, min_shot_frames), 1, size,
                              512, max(64, 4 * min_shot_frames), gradual))
    dt = time.perf_counter() - t
    frames = shots[-1].end if shots else 0
    keyframes = [k for s in shots for k in s.keyframe_frames]
    return {"starts": [s.start for s in shots], "keyframes": keyframes, "frames": frames,
            "decoder": reader.decoder}, frames / dt


def combos(detectors: list[str]):
    """(detector, threshold, gradual) in table order: each threshold without and with our dissolve pass."""
    return [(d, t, g) for d in detectors for t in SETTINGS[d] for g in (False, True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", nargs="*", default=list(SETTINGS))
    ap.add_argument("--min-shot-frames", type=int, default=4, help="PySceneDetect min_scene_len (default 4)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    fx = footage.build()
    truth = fx["truth"]
    print(f"trailer: {truth['frames']} frames, {len(truth['shot_starts'])} shots ({truth['short_shots']} of ≤ 12 "
          f"frames), {len(truth['cuts'])} hard cuts, {len(truth['gradual'])} gradual transitions, "
          f"{len(truth['flashes'])} flash(es); files: {', '.join(fx['files'])}; min_shot_frames {args.min_shot_frames}")
    rows = []
    print("| detector | threshold | file | decoder | hard-cut P | R | F1 | gradual found | flash false cuts | keyframes in transitions | f/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for det, th, gradual in combos(args.detectors):
        for name, path in fx["files"].items():
            res, fps = run_one(path, det, th, args.min_shot_frames, gradual)
            if res["frames"] != truth["frames"]:
                print(f"<!-- {name}: {res['frames']} frames decoded, truth has {truth['frames']} -->")
            s = score(res["starts"], res["keyframes"], truth)
            rows.append({"detector": det, "threshold": th, "gradual_pass": gradual, "file": name, **s, "fps": fps,
                         "decoder": res["decoder"]})
            print(f"| {det}{' +gradual' if gradual else ''} | {th if th is not None else 'default'} | {name} | {res['decoder']} | {s['precision']:.3f} | "
                  f"{s['recall']:.3f} | {s['f1']:.3f} | {s['gradual_found']}/{s['gradual']} | "
                  f"{s['flash_false_cuts']} | {s['keyframes_in_transitions']} | {fps:.0f} |")
    print("\n| detector | threshold | hard-cut F1 (all files) | gradual found | flash false cuts | keyframes in transitions |")
    print("|---|---|---|---|---|---|")
    for det, th, gradual in combos(args.detectors):
        sel = [r for r in rows if r["detector"] == det and r["threshold"] == th and r["gradual_pass"] == gradual]
        tp, fp, n = (sum(r[k] for r in sel) for k in ("tp", "fp", "cuts"))
        p, r = tp / max(1, tp + fp), tp / max(1, n)
        print(f"| {det}{' +gradual' if gradual else ''} | {th if th is not None else 'default'} | {2 * p * r / max(1e-9, p + r):.3f} | "
              f"{sum(x['gradual_found'] for x in sel)}/{sum(x['gradual'] for x in sel)} | "
              f"{sum(x['flash_false_cuts'] for x in sel)} | {sum(x['keyframes_in_transitions'] for x in sel)} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
