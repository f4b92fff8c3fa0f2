"""Stage export: scene_encoder → run_dir/export/ (model.safetensors, config.json, README.md card).

Loadable with ``movies2scenes.load_scene_encoder(run_dir / "export")`` (any n shots × k frames)
and, for the single-frame backbone, with ``timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=...))`` (see ``movies2scenes/export.py``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from movies2scenes import __version__
from movies2scenes.config import Config, config_hash
from movies2scenes.export import export_scene_encoder
from movies2scenes.store import read_json

from ._stage import is_done, write_done
from .train_shot_encoder import stage_input_hash

STAGE = "export"


def _done(run_dir: Path, stage: str) -> dict:
    path = run_dir / stage / "DONE.json"
    return read_json(path) if path.is_file() else {}


def run(cfg: Config, force: bool = False) -> int:
    started = time.time()
    run_dir = Path(cfg.run_dir)
    enc_dir, out = run_dir / "scene_encoder", run_dir / "export"
    input_hash = stage_input_hash(enc_dir / "DONE.json")
    chash = config_hash(asdict(cfg.export))
    if not force and is_done(out, chash, input_hash):
        print(f"export: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    data = {stage: _done(run_dir, stage).get("counts", {})
            for stage in ("shots", "shot_features", "movie_pairs", "scene_pairs", "scene_encoder")}
    metrics = {}
    for stage in ("movie_encoder", "scene_encoder", "eval"):
        for name in ("metrics.json", "report.json"):
            if (run_dir / stage / name).is_file():
                metrics[stage] = read_json(run_dir / stage / name)
    card = {"name": cfg.export.name, "version": __version__, "data": data,
            "frames_per_shot": cfg.shots.keyframes,
            "config": {"scene_encoder": asdict(cfg.scene_encoder), "scene_pairs": asdict(cfg.scene_pairs),
                       "shots": asdict(cfg.shots), "seed": cfg.seed},
            "metrics": metrics}
    config = export_scene_encoder(enc_dir, out, card)
    write_done(out, STAGE, chash, input_hash, {"num_features": config["num_features"]}, started)
    print(f"export: {config['architecture']} scene encoder ({config['num_features']}-d) → {out} "
          f"(model.safetensors, config.json, README.md)")
    return 0
