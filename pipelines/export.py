"""Stage export: scene_encoder → run_dir/export/ (model.safetensors, timm's config.json,
movies2scenes.json, README.md model card).

Loadable with ``movies2scenes.load_scene_encoder(run_dir / "export")`` (any n shots × k frames)
and, for the single-frame backbone, with ``timm.create_model("local-dir:run_dir/export",
pretrained=True)`` (see ``movies2scenes/export.py``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from movies2scenes import __version__
from movies2scenes.config import Config, config_hash, scene_encoder_settings
from movies2scenes.export import export_scene_encoder
from movies2scenes.models.factorised import TEMPORAL_FILE
from movies2scenes.models.folder import SETTINGS_FILE
from movies2scenes.store import read_json

from ._stage import (
    PRETRAINING_FILE,
    TRAINING_STAGES,
    is_done,
    read_pretraining_movies,
    stage_input_hash,
    stage_lock,
    write_done,
    write_pretraining_movies,
)

STAGE = "export"


def _done(run_dir: Path, stage: str) -> dict:
    path = run_dir / stage / "DONE.json"
    return read_json(path) if path.is_file() else {}


def run(cfg: Config, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/export/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "export") as lock:
        return _run(cfg, force, exclusive=lock.exclusive)


def _run(cfg: Config, force: bool = False, exclusive: bool = True) -> int:
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
    card = {"name": cfg.export.name, "version": __version__, "data": data, "license": cfg.export.license,
            "datasets": cfg.export.datasets, "shots": asdict(cfg.shots),
            "config": {"scene_encoder": scene_encoder_settings(cfg.scene_encoder), "scene_pairs": asdict(cfg.scene_pairs),
                       "shots": asdict(cfg.shots), "seed": cfg.seed},
            "metrics": metrics}
    seen, missing = set(), []
    for stage in TRAINING_STAGES:
        record = run_dir / stage / PRETRAINING_FILE
        if (run_dir / stage / "DONE.json").is_file():
            if record.is_file():
                seen |= read_pretraining_movies(record)
            else:
                missing.append(stage)
    if missing:
        print(f"export: warning: {', '.join(missing)} recorded no pretraining movies (trained by an older "
              "movies2scenes); `m2s evaluate` will refuse this export unless evaluate.allow_leakage=true. "
              "Rerun those stages with --force to record them.", file=sys.stderr)
    (out / PRETRAINING_FILE).unlink(missing_ok=True)
    card["pretraining_movies"] = None if missing else len(seen)
    config = export_scene_encoder(enc_dir, out, card)
    outputs = ["model.safetensors", "config.json", SETTINGS_FILE, "README.md"]
    if config.get("arch") == "factorised":
        outputs.append(TEMPORAL_FILE)
    if not missing:
        write_pretraining_movies(out, seen)
        outputs.append(PRETRAINING_FILE)
    write_done(out, STAGE, chash, input_hash, {"num_features": config["num_features"]}, started,
               outputs=outputs)
    print(f"export: {config['vit']['arch']} scene encoder ({config['num_features']}-d) → {out} "
          f"(model.safetensors, config.json, {SETTINGS_FILE}, README.md); in timm: "
          f"timm.create_model('local-dir:{out}', pretrained=True)")
    return 0
