"""Stage detect_shots: catalogue → run_dir/shots/ (webdataset shards, index.parquet, failures.jsonl).

failures.jsonl lists the movies that failed (``reason``) and, with ``"status": "warning"``, movies
that were processed but with something the user should know (a few frames fewer than the
container declares: :func:`movies2scenes.shots.check_decoded`).

One shard per movie, ``shots-<ID>.tar`` with ID the movie's safe name (``catalogue.safe_name``),
so the artefacts depend neither on how many processes made them nor on the catalogue's row order:
adding, removing or reordering titles only processes the titles that changed. A movie is done when
its record ``parts/<ID>.json`` exists (written after its shard is renamed into place) with this
config's hash and the video's fingerprint; a rerun skips those and redoes everything else, so a
killed run resumes and ends with the same files as an uninterrupted one. Failures are retried on
rerun. The index lists movies sorted by id (the catalogue's order does not change the result).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from movies2scenes.catalogue import Movie, duplicate_videos, load_catalogue, video_fingerprints
from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.integrity import file_record, read_done
from movies2scenes.shot_shards import process_movie, shot_index
from movies2scenes.store import atomic_path, remove_stale_tmp, write_parquet

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, PerItemStage, StageContext
from .protocol import prune

class DetectShots(PerItemStage):
    spec = STAGE_SPECS["detect-shots"]

    def __init__(self, cfg: Config, force: bool = False, shard: str | None = None, strict: bool = False):
        super().__init__(cfg, force, shard)
        self.strict = strict

    def check(self) -> None:
        if not self.cfg.catalogue:
            raise ConfigError("no catalogue given: set catalogue=PATH (CSV or JSONL, see README)")
        # sorted by id: the catalogue's row order changes neither the work split nor the artefacts
        self.catalogue = sorted(load_catalogue(self.cfg.catalogue), key=lambda m: m.movie_id)
        self.prints = video_fingerprints(self.catalogue)
        self.duplicates = duplicate_videos(self.prints)  # decoded once, for the first id of each video

    def input_hash(self) -> str:
        return hashlib.sha256(json.dumps([[m.movie_id, str(m.video), self.prints[m.movie_id]]
                                          for m in self.catalogue]).encode()).hexdigest()[:16]

    def config_hash(self) -> str:
        return config_hash(self.cfg.shots)

    def up_to_date(self, ctx: StageContext) -> int:
        failed = read_done(ctx.run.done("shots")).get("counts", {}).get("failed", 0)
        if ctx.slot.is_main:
            print(f"detect-shots: {ctx.out} is up to date (DONE.json matches); nothing to do"
                  + (f"; {failed} movie(s) failed (reasons in {ctx.out / 'failures.jsonl'})" if failed else ""))
        return 1 if self.strict and failed else 0

    def items(self, ctx: StageContext) -> list[Movie]:
        return self.catalogue

    def accepts(self, ctx: StageContext, movie: Movie, rec: dict) -> bool:
        """The movie's part belongs to this config and this video file."""
        return rec.get("config_hash") == ctx.config_hash and rec.get("fingerprint") == self.prints[movie.movie_id]

    def complete(self, ctx: StageContext, movie: Movie) -> bool:
        """Done, ok and its shard as written (a failed movie is retried on every run)."""
        rec = self.part(ctx, movie)
        return bool(rec) and rec.get("status") == "ok" and "files" in rec and self.intact(ctx, rec)

    def size(self, ctx: StageContext, movie: Movie) -> float:
        """The video file's bytes: a free stand-in for its duration."""
        try:
            return float(Path(movie.video).stat().st_size)
        except OSError:
            return 0.0

    def process_item(self, ctx: StageContext, movie: Movie) -> dict:
        first = self.duplicates.get(movie.movie_id)
        if first is not None:  # never decoded twice, never two ids for one film in training or evaluation
            rec = {"movie_id": movie.movie_id, "video": str(movie.video), "status": "failed", "elapsed_s": 0.0,
                   "reason": f"the same video as movie {first!r} (same size and first/last 64 KiB): processed "
                             "once, for that id; give each film one catalogue row"}
        else:
            rec = process_movie(movie, ctx.out, self.cfg.shots)
        return rec | {"config_hash": ctx.config_hash, "fingerprint": self.prints[movie.movie_id]}

    def lost_part(self, ctx: StageContext, movie: Movie, why: str) -> dict:
        """A movie that kills its decoder's worker every time: failed, like an unreadable video."""
        return {"movie_id": movie.movie_id, "video": str(movie.video), "status": "failed", "elapsed_s": 0.0,
                "reason": f"not processed: {why}", "config_hash": ctx.config_hash,
                "fingerprint": self.prints[movie.movie_id]}

    def ray_resources(self) -> tuple[float, float]:
        """The decode threads; a quarter GPU for TransNetV2 where CUDA is."""
        import torch

        gpu = 0.25 if self.cfg.shots.detector == "transnetv2" and torch.cuda.is_available() else 0.0
        return float(max(1, self.cfg.shots.decode_threads)), gpu

    def merge(self, ctx: StageContext, items: list[Movie]) -> Finished:
        """Every movie's part into index.parquet + failures.jsonl (+ DONE.json by the kit)."""
        out = ctx.out
        records = [self.part(ctx, m) for m in items]
        table, failures, warnings = shot_index(records)
        write_parquet(out / "index.parquet", table)
        files = {name: f for r in records if r["status"] == "ok" for name, f in r["files"].items()}
        files["index.parquet"] = file_record(out / "index.parquet")
        with atomic_path(out / "failures.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures + warnings))
        # shards of movies that failed now or left the catalogue are not part of the result
        prune(out, "shots-*.tar", {r["shard"] for r in records if r["status"] == "ok"})
        if ctx.exclusive:  # with several processes another one may still be writing a temp file
            remove_stale_tmp(out)
        ok = len(records) - len(failures)
        counts = {"movies": len(records), "ok": ok, "failed": len(failures),
                  "shots": table.num_rows, "frames": sum(r.get("num_frames", 0) for r in records)}
        msg = (f"detect-shots: {counts['movies']} movies, {ok} ok, {len(failures)} failed, "
               f"{counts['shots']} shots → {out}")
        if failures:
            msg += f" (reasons in {out / 'failures.jsonl'})"
        if warnings:
            msg += f"; {len(warnings)} processed with a warning (in {out / 'failures.jsonl'})"
        return Finished(counts, files=files, extra={"decode_seconds": round(sum(r["elapsed_s"] for r in records), 3),
                                                    "catalogue": str(Path(self.cfg.catalogue).resolve())},
                        say=[msg], exit_code=1 if ok == 0 or (self.strict and failures) else 0)


def run(cfg: Config, shard: str | None = None, strict: bool = False, force: bool = False) -> int:
    return DetectShots(cfg, force, shard, strict).run()
