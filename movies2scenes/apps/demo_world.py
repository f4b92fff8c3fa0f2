"""``m2s demo-world OUT_DIR``: write the synthetic demo world (see movies2scenes/demo.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from movies2scenes.config import Config
from movies2scenes.demo import make_world


def run(cfg: Config, out_dir: str) -> int:
    t0 = time.time()
    out = make_world(out_dir, cfg.demo_world, cfg.seed)
    counts = json.loads((Path(out) / "world.json").read_text())["counts"]
    print(f"demo world → {out}: {counts['movies']} movies, {counts['shots']} shots, "
          f"{counts['frames']} frames ({time.time() - t0:.1f}s); catalogue {out}/catalogue.csv")
    return 0
