"""Stage mine_scene_pairs: shot_features + movie_encoder + movie_pairs (+ shots) → run_dir/scene_pairs/.

For every similar movie pair of ``movie_pairs/<source>.parquet`` (S), all shots of both movies go
through E_movie without its last FC (no max_shots limit) and ``mining.mine_pair`` picks the
non-overlapping similar scene pairs. Work is split into units of ``movie_pairs_per_shard`` movie
pairs; unit u belongs to the process with ``u % world == rank`` (``--shard i/n`` or
``accelerate launch``). Each unit writes, atomically and in this order:

* ``scenes-UUUUUU.tar`` — webdataset training shard, one sample per scene pair, in row order:
  ``json`` (movie_a, start_a, movie_b, start_b, score, source, n) and the stored keyframes of the
  n shots of each side (``a000.0.jpg`` … / ``b008.0.jpg``; see ``store.decode_scene``);
* ``parts/UUUUUU.parquet`` — its rows (the columns of ``pairs.parquet``), with the skipped movie
  pairs and the stamp (config + input hashes) in the Parquet metadata.

A killed run redoes only units without a matching part. The last step (main process, once every
part is present) streams the parts, one at a time, into ``pairs.parquet`` (movie_a, start_a,
movie_b, start_b, score, source, shard, key) and ``failures.jsonl`` (movie pairs that could not be
mined and why), keeping only the report's top-k in memory, then writes the report
(``report/index.html`` with adjacency heatmaps and a contact sheet) and ``DONE.json``. Memory of the
merge is one unit's rows, whatever the number of titles.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from movies2scenes.artefacts import MovieEmbeddings, ShotSamples
from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.features import ShotFeatures
from movies2scenes.integrity import file_record, verified
from movies2scenes.scene_pairs import UnitMiner, merge_parts, part_table, unit_shard, write_report
from movies2scenes.store import TMP_PREFIX, output_error, write_shards

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, PerItemStage, StageContext
from .protocol import TableParts, prune


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"scene_pairs.device {name!r}: CUDA is not available here")
    return torch.device(name)


class MineScenePairs(PerItemStage):
    spec = STAGE_SPECS["mine-scene-pairs"]
    unit = "unit"
    parts = TableParts  # a unit's part is its rows

    def __init__(self, cfg: Config, force: bool = False, shard: str | None = None):
        super().__init__(cfg, force, shard)
        self.source = cfg.scene_pairs.pairs_source or cfg.movie_encoder.pairs_source

    def config_hash(self) -> str:
        # the device changes nothing in the result (tested): it is not part of the hash
        return config_hash({k: v for k, v in asdict(self.cfg.scene_pairs).items() if k != "device"}
                           | {"source": self.source})

    def items(self, ctx: StageContext) -> list[int]:
        """Units of ``movie_pairs_per_shard`` movie pairs (sorted), by number."""
        source_file = ctx.run.folder("movie_pairs") / f"{self.source}.parquet"
        if not source_file.is_file():
            raise ConfigError(f"scene_pairs.pairs_source {self.source!r}: {source_file} does not exist "
                              "(add it to movie_pairs.sources)")
        self.movie_pairs = sorted({(r["movie_a"], r["movie_b"]) for r in pq.read_table(verified(source_file)).to_pylist()})
        size = self.cfg.scene_pairs.movie_pairs_per_shard
        self.units = [self.movie_pairs[i:i + size] for i in range(0, len(self.movie_pairs), size)]
        return list(range(len(self.units)))

    def size(self, ctx: StageContext, u: int) -> float:
        return float(len(self.units[u]))

    def miner(self, ctx: StageContext) -> UnitMiner:
        """Loaded once per process (or Ray worker): the shot features and the movie encoder."""
        if getattr(self, "_miner", None) is None:
            feats = ShotFeatures(ctx.run.folder("shot_features"))
            device = _device(self.cfg.scene_pairs.device)
            self._miner = UnitMiner(self.cfg.scene_pairs, self.source, feats,
                                    MovieEmbeddings(feats, ctx.run.folder("movie_encoder"), device),
                                    ShotSamples(ctx.run.folder("shots")))
        return self._miner

    def process_item(self, ctx: StageContext, u: int) -> pa.Table:
        """Mine the unit's movie pairs and write its training shard; its part: the rows, with the
        skipped pairs and the shard's record in the table's metadata."""
        miner = self.miner(ctx)
        rows, skipped = miner.mine(u, self.units[u])
        write_shards(ctx.out / unit_shard(u), miner.samples(rows))
        return part_table(rows, ctx.stamp, skipped, {unit_shard(u): file_record(ctx.out / unit_shard(u))})

    def merge(self, ctx: StageContext, items: list[int]) -> Finished:
        out, sp = ctx.out, self.cfg.scene_pairs
        merged = merge_parts([self.part_records(ctx).path(u) for u in items], out,
                             sp.report_movie_pairs, sp.report_scene_pairs)
        prune(out, "scenes-*.tar", {unit_shard(u) for u in items})
        self.report(out, merged)
        files = {name: f for u in items for name, f in self.part(ctx, u)["files"].items()}
        files["pairs.parquet"] = file_record(out / "pairs.parquet")
        rows, skipped, mined_pairs = merged.rows, merged.skipped, merged.mined_pairs
        counts = {"movie_pairs": len(self.movie_pairs), "mined_movie_pairs": mined_pairs, "skipped": skipped,
                  "scene_pairs": rows, "shards": len(items), "source": self.source}
        say = [f"mine-scene-pairs: {rows} scene pairs from {mined_pairs}/{len(self.movie_pairs)} {self.source} "
               f"movie pairs ({skipped} skipped) in {len(items)} shard(s) → {out}"]
        if skipped:
            say.append(f"mine-scene-pairs: {skipped} skipped movie pairs and reasons: {out / 'failures.jsonl'}")
        return Finished(counts, files=files, extra={"shots_per_scene": sp.shots_per_scene}, say=say)

    def report(self, out: Path, merged) -> None:
        """The report is part of the stage's artefacts: if it cannot be written the stage is not
        done (the mined units stay; the rerun only merges and draws again)."""
        tmp_report = out / f"{TMP_PREFIX}{os.getpid()}-report"
        shutil.rmtree(tmp_report, ignore_errors=True)
        try:
            write_report(tmp_report, self.cfg, merged.top_movie_pairs, merged.top_rows, self.source)
            shutil.rmtree(out / "report", ignore_errors=True)
            tmp_report.rename(out / "report")
        except OSError as e:
            raise output_error(out / "report", e) from e
        finally:
            shutil.rmtree(tmp_report, ignore_errors=True)


def run(cfg: Config, shard: str | None = None, force: bool = False) -> int:
    return MineScenePairs(cfg, force, shard).run()
