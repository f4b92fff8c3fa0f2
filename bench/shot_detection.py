"""Shot detection on real footage with known edits (testkit/footage.py): every detector we offer,
with PySceneDetect's default threshold and ours, on every encoding of the trailer.

    python bench/shot_detection.py [--detectors content adaptive histogram hash transnetv2] [--json OUT]
    python bench/shot_detection.py --part registry   # the real clips as they ship (testkit/footage.py REGISTRY)
    python bench/shot_detection.py --part world      # the demo world with dissolves and fades
    python bench/shot_detection.py --part cli        # the `scenedetect` CLI with its defaults, same files
    python bench/shot_detection.py --part precision  # footage with no cut in it (testkit/footage.py precision_corpus)
    python bench/shot_detection.py --part transnet-reference  # our streaming TransNetV2 = the wheel's predict_frames
    python bench/shot_detection.py --smoke  # one encoding, the content detector: make test runs it

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

from movies2scenes.shots import detect_shots, make_detector
from movies2scenes.video import FrameReader, probe, scaled_size
from testkit import footage
from testkit.shot_scoring import TOL, score, transnet_against_reference

SETTINGS = {  # detector → thresholds to try (None = PySceneDetect's default)
    "content": [None, 22.0],
    "adaptive": [None, 2.0],
    "histogram": [None, 0.1],
    "hash": [None, 0.3],
    "transnetv2": [None, 0.3],
}


def run_one(path: str, detector: str, threshold, min_shot_frames: int, gradual: bool) -> tuple[dict, float]:
    info = probe(path)
    size = scaled_size(info.width, info.height, 128)
    t = time.perf_counter()
    reader = FrameReader(path, size)
    shots = list(detect_shots(iter(reader), info.fps, make_detector(detector, threshold, min_shot_frames), 1, size,
                              512, max(64, 4 * min_shot_frames), gradual, min_shot_frames))
    dt = time.perf_counter() - t
    frames = shots[-1].end if shots else 0
    keyframes = [k for s in shots for k in s.keyframe_frames]
    return {"starts": [s.start for s in shots], "keyframes": keyframes, "frames": frames,
            "spans": [list(s.transition_in) for s in shots if s.transition_in],
            "decoder": reader.decoder}, frames / dt


def combos(detectors: list[str], only_gradual: bool = False):
    """(detector, threshold, gradual) in table order: each threshold without and with our dissolve pass."""
    return [(d, t, g) for d in detectors for t in SETTINGS[d] for g in ((True,) if only_gradual else (False, True))]


def label(detector: str, gradual: bool) -> str:
    return detector + (" +gradual" if gradual else "")


def cuts_table(title: str, items: dict[str, dict], detectors: list[str], min_shot_frames: int) -> list[dict]:
    """Hard cuts only (no gradual ground truth): per detector, TP / FP / FN summed over ``items``
    (name → {path, cuts}), and the names with errors."""
    print(f"\n{title}\n\n| detector | cuts found | false cuts | missed | hard-cut F1 | files with an error | f/s (median) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for det, gradual in [(d, g) for d in detectors for g in (False, True)]:
        tp = fp = fn = 0
        wrong, speeds = [], []
        for name, item in items.items():
            res, fps = run_one(item["path"], det, None, min_shot_frames, gradual)
            s = score(res["starts"], [], {"cuts": item["cuts"], "gradual": item.get("gradual", []), "flashes": []})
            tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["cuts"] - s["tp"]
            speeds.append(fps)
            if s["fp"] or s["tp"] < s["cuts"]:
                wrong.append(f"{name} ({', '.join(map(str, res['starts'][1:])) or 'no cut'})")
        p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
        f1 = 2 * p * r / max(1e-9, p + r) if tp + fp + fn else 1.0
        rows.append({"detector": det, "gradual_pass": gradual, "tp": tp, "fp": fp, "fn": fn, "f1": f1, "wrong": wrong})
        print(f"| {label(det, gradual)} | {tp} | {fp} | {fn} | {f1:.3f} | {'; '.join(wrong) or '—'} | "
              f"{sorted(speeds)[len(speeds) // 2]:.0f} |", flush=True)
    return rows


def registry(detectors: list[str], min_shot_frames: int) -> list[dict]:
    clips = footage.registry_clips()
    print(f"registry clips: {len(clips)} ({', '.join(clips)}); true cuts: "
          f"{sum(len(c['cuts']) for c in clips.values())}; missing packages: {footage.missing_registry() or 'none'}")
    return cuts_table("Real clips as they ship (hard cuts ±2 frames)", clips, detectors, min_shot_frames)


def world(detectors: list[str], min_shot_frames: int, movies: int = 6, rate: float = 0.6) -> list[dict]:
    """A small demo world with gradual transitions at ``rate`` of scene changes (seed 0)."""
    import csv
    import tempfile

    from movies2scenes.config import DemoWorldConfig
    from movies2scenes.demo import make_world

    folder = Path(tempfile.mkdtemp(prefix="m2s-world-"))
    make_world(folder, DemoWorldConfig(num_movies=movies, transition_rate=rate), seed=0, progress=False)
    items: dict[str, dict] = {}
    with open(folder / "ground_truth" / "shots.csv") as f:
        for row in csv.DictReader(f):
            it = items.setdefault(row["movie_id"], {"cuts": [], "gradual": []})
            start = int(row["start_frame"])
            if row["transition"]:
                it["gradual"].append([int(row["transition_start"]), int(row["transition_end"])])
            elif start > 0:
                it["cuts"].append(start)
    with open(folder / "catalogue.csv") as f:
        for row in csv.DictReader(f):
            items[row["movie_id"]]["path"] = str(folder / row["video"]) if not Path(row["video"]).is_absolute() else row["video"]
    n_cuts, n_grad = sum(len(i["cuts"]) for i in items.values()), sum(len(i["gradual"]) for i in items.values())
    print(f"\ndemo world: {movies} movies, transition_rate {rate}: {n_cuts} hard cuts, {n_grad} gradual "
          f"transitions (dissolves and fades of 4–8 frames at 12 fps)")
    print("\n| detector | hard-cut P | R | F1 | gradual found | gradual span P | R | F1 | keyframes in transitions |")
    print("|---|---|---|---|---|---|---|---|---|")
    out = []
    for det, gradual in [(d, g) for d in detectors for g in (False, True)]:
        tot = {k: 0 for k in ("tp", "fp", "cuts", "gradual_found", "gradual", "spans", "spans_matched",
                              "keyframes_in_transitions")}
        for item in items.values():
            res, _ = run_one(item["path"], det, None, min_shot_frames, gradual)
            s = score(res["starts"], res["keyframes"], {"cuts": item["cuts"], "gradual": item["gradual"],
                                                        "flashes": []}, res["spans"])
            for k in tot:
                tot[k] += s[k]
        p, r = tot["tp"] / max(1, tot["tp"] + tot["fp"]), tot["tp"] / max(1, tot["cuts"])
        sp, sr = tot["spans_matched"] / max(1, tot["spans"]), tot["spans_matched"] / max(1, tot["gradual"])
        print(f"| {label(det, gradual)} | {p:.3f} | {r:.3f} | {2 * p * r / max(1e-9, p + r):.3f} | "
              f"{tot['gradual_found']}/{tot['gradual']} | {sp:.2f} | {sr:.2f} | {2 * sp * sr / max(1e-9, sp + sr):.2f} | "
              f"{tot['keyframes_in_transitions']} |", flush=True)
        out.append({"detector": det, "gradual_pass": gradual, **tot})
    return out


def corpus_clips() -> list:
    """The precision corpus without psychopy's default.mp4 (an animated test pattern, not camera
    footage: the content detector's 2 cuts on it are recorded in tests/test_real_footage.py)."""
    return [c for c in footage.precision_corpus() if not c.name.startswith("default.mp4")]


def score_clip(clip, shots) -> dict:
    """One corpus clip: false cuts (a boundary matching no true cut ±TOL and inside no true
    transition ±TOL, or a second boundary in one), missed true cuts/transitions, whether a
    transition's recorded span starts and ends within ±TOL of the truth, keyframes inside it."""
    starts = [s.start for s in shots[1:]]
    used, missed, false = set(), 0, 0
    for c in clip.cuts:
        m = [d for d in starts if abs(d - c) <= TOL and d not in used]
        used.update(m[:1])
        missed += not m
    for a, b in clip.gradual:
        m = [d for d in starts if a - TOL <= d <= b + TOL and d not in used]
        used.update(m[:1])
        missed += not m
    false = sum(1 for d in starts if d not in used)
    spans = [s.transition_in for s in shots if s.transition_in]
    true_spans = clip.gradual + clip.spans
    span_exact = sum(1 for a, b in true_spans if any(abs(x - a) <= TOL and abs(y - b) <= TOL + 1 for x, y in spans))
    keyframes = [k for s in shots for k in s.keyframe_frames]
    in_transition = sum(1 for k in keyframes if any(a <= k <= b for a, b in true_spans))
    return {"false": false, "missed": missed, "found": starts, "spans": [list(x) for x in spans],
            "span_exact": span_exact, "keyframes_in_transitions": in_transition}


def precision(detectors: list[str], min_shot_frames: int, clips: list | None = None) -> list[dict]:
    """False cuts per 10 minutes of continuous real footage, per detector with and without the
    dissolve pass, and the corpus' two transitions (a 40-frame dissolve, a slow fade into a cut)."""
    clips = clips if clips is not None else corpus_clips()
    cont = [c for c in clips if c.continuous]
    minutes = sum(len(c.frames) / c.fps for c in cont) / 60
    print(f"\nprecision corpus: {len(cont)} continuous clips, {sum(len(c.frames) for c in cont)} frames "
          f"({minutes:.1f} min of footage with no cut: {sum('#' in c.name for c in cont)} shots of real clips cut at "
          f"their checked cuts, {sum('#' not in c.name for c in cont)} camera motions on real frames); transitions: "
          f"{', '.join(c.name for c in clips if not c.continuous)}; min_shot_frames {min_shot_frames}")
    print("\n| detector | false cuts | per 10 min | clips with a false cut | transitions missed | spans exact | "
          "keyframes in transitions | f/s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for det in detectors:
        for gradual in (False, True):
            false = missed = exact = kin = 0
            wrong, frames, seconds = [], 0, 0.0
            for clip in clips:
                t = time.perf_counter()
                shots = list(detect_shots(iter(clip.frames), clip.fps, make_detector(det, None, min_shot_frames), 1,
                                          None, 512, max(64, 4 * min_shot_frames), gradual, min_shot_frames))
                seconds += time.perf_counter() - t
                frames += len(clip.frames)
                s = score_clip(clip, shots)
                false, missed, exact, kin = (false + s["false"], missed + s["missed"], exact + s["span_exact"],
                                             kin + s["keyframes_in_transitions"])
                if s["false"] or s["missed"]:
                    wrong.append(f"{clip.name} ({', '.join(map(str, s['found'])) or 'no cut'})")
            n_trans = sum(len(c.cuts) + len(c.gradual) for c in clips)
            rows.append({"detector": det, "gradual": gradual, "false": false, "per_10_min": 10 * false / minutes,
                         "missed": missed, "transitions": n_trans, "spans_exact": exact,
                         "keyframes_in_transitions": kin, "wrong": wrong, "fps": frames / seconds})
            print(f"| {label(det, gradual)} | {false} | {10 * false / minutes:.1f} | {'; '.join(wrong) or '—'} | "
                  f"{missed}/{n_trans} | {exact}/{sum(len(c.gradual) + len(c.spans) for c in clips)} | {kin} | "
                  f"{frames / seconds:.0f} |", flush=True)
    return rows


def transnet_reference(fx: dict) -> list[dict]:
    from movies2scenes.transnet import load_model

    model = load_model("cpu")
    files = {f"trailer.{k}": v for k, v in fx["files"].items()}
    files.update({k: v["path"] for k, v in footage.registry_clips().items()})
    print("\nTransNetV2: the wheel's predict_frames vs our streaming detector (same decoded frames), and the "
          "detector's cuts our post-rules removed (dissolve pass on)\n")
    print("| file | frames | reference cuts | ours | equal | removed by post-rules |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, path in files.items():
        r = transnet_against_reference(path, model)
        rows.append({"file": name, **r})
        print(f"| {name} | {r['frames']} | {len(r['reference'])} | {len(r['ours'])} | {'yes' if r['equal'] else 'NO'} | "
              f"{', '.join(f'{c} ({w})' for c, w in r['removed'].items()) or '—'} |", flush=True)
    return rows


def cli(fx: dict) -> list[dict]:
    """The `scenedetect` CLI as a user runs it (no detector named: its default), on the same files."""
    import csv
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("scenedetect") or str(Path(sys.executable).with_name("scenedetect"))
    truth = fx["truth"]
    print("\n`scenedetect -i FILE list-scenes` (CLI defaults), real-footage trailer\n")
    print("| file | hard-cut P | R | F1 | gradual found | flash false cuts | s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name, path in fx["files"].items():
        out = Path(tempfile.mkdtemp(prefix="m2s-sd-"))
        t = time.perf_counter()
        subprocess.run([exe, "-i", path, "-o", str(out), "-q", "list-scenes", "-s"], check=True)
        dt = time.perf_counter() - t
        with open(next(out.glob("*.csv"))) as f:
            lines = f.read().splitlines()
        head = next(i for i, line in enumerate(lines) if "Start Frame" in line)
        starts = [int(r["Start Frame"]) - 1 for r in csv.DictReader(lines[head:])]  # 1-based in its CSV
        s = score(starts, [], truth)
        rows.append({"file": name, **s, "seconds": dt})
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['gradual_found']}/{s['gradual']} | "
              f"{s['flash_false_cuts']} | {dt:.1f} |", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["trailer", "registry", "world", "cli", "precision", "transnet-reference", "all"],
                    default="trailer")
    ap.add_argument("--detectors", nargs="*", default=list(SETTINGS))
    ap.add_argument("--min-shot-frames", type=int, default=4, help="PySceneDetect min_scene_len (default 4)")
    ap.add_argument("--files", nargs="*", help="only these trailer encodings (e.g. h264.mp4)")
    ap.add_argument("--only-gradual-pass", action="store_true", help="only the rows with the dissolve pass on")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true",
                    help="seconds, not minutes: the trailer's first encoding with the content detector only")
    args = ap.parse_args()
    fx = footage.build()
    if args.smoke:
        args.part, args.detectors, args.files = "trailer", ["content"], [next(iter(fx["files"]))]
    truth = fx["truth"]
    if args.files:
        fx["files"] = {k: v for k, v in fx["files"].items() if k in args.files}
    extra: dict[str, list] = {}
    if args.part in ("registry", "all"):
        extra["registry"] = registry(args.detectors, args.min_shot_frames)
    if args.part in ("world", "all"):
        extra["world"] = world(args.detectors, args.min_shot_frames)
    if args.part in ("cli", "all"):
        extra["cli"] = cli(fx)
    if args.part in ("precision", "all"):
        extra["precision"] = precision(args.detectors, args.min_shot_frames)
    if args.part in ("transnet-reference", "all"):
        extra["transnet_reference"] = transnet_reference(fx)
    if args.part != "all" and args.part != "trailer":
        if args.json:
            args.json.write_text(json.dumps(extra, indent=1))
        return
    print(f"trailer: {truth['frames']} frames, {len(truth['shot_starts'])} shots ({truth['short_shots']} of ≤ 12 "
          f"frames), {len(truth['cuts'])} hard cuts, {len(truth['gradual'])} gradual transitions, "
          f"{len(truth['flashes'])} flash(es); files: {', '.join(fx['files'])}; min_shot_frames {args.min_shot_frames}")
    rows = []
    print("| detector | threshold | file | decoder | hard-cut P | R | F1 | gradual found | span P | R | F1 | flash false cuts | keyframes in transitions | f/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for det, th, gradual in combos(args.detectors, args.only_gradual_pass):
        for name, path in fx["files"].items():
            res, fps = run_one(path, det, th, args.min_shot_frames, gradual)
            if res["frames"] != truth["frames"]:
                print(f"<!-- {name}: {res['frames']} frames decoded, truth has {truth['frames']} -->")
            s = score(res["starts"], res["keyframes"], truth, res["spans"])
            rows.append({"detector": det, "threshold": th, "gradual_pass": gradual, "file": name, **s, "fps": fps,
                         "decoder": res["decoder"]})
            print(f"| {label(det, gradual)} | {th if th is not None else 'default'} | {name} | {res['decoder']} | "
                  f"{s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['gradual_found']}/{s['gradual']} | "
                  f"{s['span_precision']:.2f} | {s['span_recall']:.2f} | {s['span_f1']:.2f} | "
                  f"{s['flash_false_cuts']} | {s['keyframes_in_transitions']} | {fps:.0f} |", flush=True)
    print("\n| detector | threshold | hard-cut P | R | F1 | gradual found | gradual span P | R | F1 | flash false cuts | "
          "keyframes in transitions | f/s (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for det, th, gradual in combos(args.detectors, args.only_gradual_pass):
        sel = [r for r in rows if r["detector"] == det and r["threshold"] == th and r["gradual_pass"] == gradual]
        tp, fp, n = (sum(r[k] for r in sel) for k in ("tp", "fp", "cuts"))
        p, r = tp / max(1, tp + fp), tp / max(1, n)
        m, ns, ng = (sum(x[k] for x in sel) for k in ("spans_matched", "spans", "gradual"))
        sp, sr = m / max(1, ns), m / max(1, ng)
        print(f"| {label(det, gradual)} | {th if th is not None else 'default'} | {p:.3f} | {r:.3f} | "
              f"{2 * p * r / max(1e-9, p + r):.3f} | {sum(x['gradual_found'] for x in sel)}/{ng} | "
              f"{sp:.2f} | {sr:.2f} | {2 * sp * sr / max(1e-9, sp + sr):.2f} | "
              f"{sum(x['flash_false_cuts'] for x in sel)} | {sum(x['keyframes_in_transitions'] for x in sel)} | "
              f"{sorted(x['fps'] for x in sel)[len(sel) // 2]:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"trailer": rows, **extra}, indent=1))


if __name__ == "__main__":
    main()
