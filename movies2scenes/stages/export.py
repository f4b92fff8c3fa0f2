"""Stage export: scene_encoder → run_dir/export/ (model.safetensors, timm's config.json,
movies2scenes.json, README.md model card).

Loadable with ``movies2scenes.load_scene_encoder(run_dir / "export")`` (any n shots × k frames)
and, for the single-frame backbone, with ``timm.create_model("local-dir:run_dir/export",
pretrained=True)`` (see ``movies2scenes/export.py``).
"""

from __future__ import annotations

import sys
from dataclasses import asdict

from movies2scenes import __version__
from movies2scenes.integrity import DamagedRecord, read_done
from movies2scenes.config import Config, config_hash, scene_encoder_settings
from movies2scenes.export import export_scene_encoder
from movies2scenes.layout import TRAINING_FOLDERS
from movies2scenes.models.factorised import TEMPORAL_FILE
from movies2scenes.models.folder import SETTINGS_FILE
from movies2scenes.store import read_json, sha256_file

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, Stage, StageContext
from .protocol import PRETRAINING_FILE, read_pretraining_movies, write_pretraining_movies


class Export(Stage):
    spec = STAGE_SPECS["export"]

    def config_hash(self) -> str:
        return config_hash(asdict(self.cfg.export))

    def model_card(self) -> dict:
        cfg, run = self.cfg, self.run_layout
        data = {stage: (read_done(run.done(stage)) if run.is_done(stage) else {}).get("counts", {})
                for stage in ("shots", "shot_features", "movie_pairs", "scene_pairs", "scene_encoder")}
        metrics = {}
        for stage in ("movie_encoder", "scene_encoder", "eval"):
            for name in ("metrics.json", "report.json"):
                if (run.folder(stage) / name).is_file():
                    metrics[stage] = read_json(run.folder(stage) / name)
        return {"name": cfg.export.name, "version": __version__, "data": data, "license": cfg.export.license,
                "datasets": cfg.export.datasets, "shots": asdict(cfg.shots),
                "config": {"scene_encoder": scene_encoder_settings(cfg.scene_encoder),
                           "scene_pairs": asdict(cfg.scene_pairs), "shots": asdict(cfg.shots), "seed": cfg.seed},
                "metrics": metrics}

    def check(self) -> None:
        """The card this stage wrote last (from its record, before the kit removes it)."""
        done = self.run_layout.done(self.spec.folder)
        try:
            rec = read_done(done) if done.is_file() else {}
        except DamagedRecord:
            rec = {}
        card = rec.get("card") if isinstance(rec.get("card"), dict) else None
        # the sha256 of the README.md this stage wrote; "" when the last card went beside a user's; None: no record
        self.card_written = (card.get("README.md", "") if card is not None
                             else (rec.get("outputs") or {}).get("README.md"))

    def card_file(self, ctx: StageContext) -> str:
        """README.md, unless someone edited the one this stage wrote: theirs is kept, never overwritten."""
        readme = ctx.out / "README.md"
        if self.card_written is not None and readme.is_file() and sha256_file(readme) != self.card_written:
            print(f"export: {readme} was edited since export wrote it: kept as it is; the new model card is "
                  f"{ctx.out / 'README.generated.md'}", file=sys.stderr)
            return "README.generated.md"
        return "README.md"

    def pretraining_movies(self) -> tuple[set[str], list[str]]:
        """Every movie any training stage learned from, and the training stages without a record."""
        seen, missing = set(), []
        for stage in TRAINING_FOLDERS:
            record = self.run_layout.folder(stage) / PRETRAINING_FILE
            if self.run_layout.is_done(stage):
                if record.is_file():
                    seen |= read_pretraining_movies(record)
                else:
                    missing.append(stage)
        return seen, missing

    def work(self, ctx: StageContext) -> Finished:
        card = self.model_card()
        seen, missing = self.pretraining_movies()
        if missing:
            print(f"export: warning: {', '.join(missing)} recorded no pretraining movies (trained by an older "
                  "movies2scenes); `m2s evaluate` will refuse this export unless evaluate.allow_leakage=true. "
                  "Rerun those stages with --force to record them.", file=sys.stderr)
        (ctx.out / PRETRAINING_FILE).unlink(missing_ok=True)
        card["pretraining_movies"] = None if missing else len(seen)
        card_file = self.card_file(ctx)
        config = export_scene_encoder(ctx.run.folder("scene_encoder"), ctx.out, card, card_file)
        outputs = ["model.safetensors", "config.json", SETTINGS_FILE]  # the card is for people: not checked
        if config.get("arch") == "factorised":
            outputs.append(TEMPORAL_FILE)
        if not missing:
            write_pretraining_movies(ctx.out, seen)
            outputs.append(PRETRAINING_FILE)
        out = ctx.out
        return Finished({"num_features": config["num_features"]}, outputs=outputs,
                        extra={"card": {card_file: sha256_file(out / card_file)}}, say=[
            f"export: {config['vit']['arch']} scene encoder ({config['num_features']}-d) → {out} "
            f"(model.safetensors, config.json, {SETTINGS_FILE}, README.md); in timm: "
            f"timm.create_model('local-dir:{out}', pretrained=True)"])


def run(cfg: Config, force: bool = False) -> int:
    return Export(cfg, force).run()
