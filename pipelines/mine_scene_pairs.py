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
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import torch

from movies2scenes.artefacts import MovieEmbeddings, ShotSamples
from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.features import ShotFeatures
from movies2scenes.mining import mine_pair
from movies2scenes.progress import progress
from movies2scenes.scene_pairs import merge_parts, part_stamp, part_table, write_report
from movies2scenes.store import (
    TMP_PREFIX,
    output_error,
    remove_stale_tmp,
    scene_fields,
    write_parquet,
    write_shards,
)

from ._stage import is_done, process_slot, prune, stage_input_hash, stage_lock, write_done

STAGE = "mine_scene_pairs"




def unit_part(unit: int) -> str:
    return f"{unit:06d}.parquet"


def unit_shard(unit: int) -> str:
    return f"scenes-{unit:06d}.tar"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"scene_pairs.device {name!r}: CUDA is not available here")
    return torch.device(name)


def run(cfg: Config, shard: str | None = None, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/scene_pairs/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "scene_pairs", shard) as lock:
        return _run(cfg, shard, force, exclusive=lock.exclusive)


def _run(cfg: Config, shard: str | None = None, force: bool = False, exclusive: bool = True) -> int:
    started = time.time()
    run_dir = Path(cfg.run_dir)
    shots_dir, feat_dir = run_dir / "shots", run_dir / "shot_features"
    enc_dir, pairs_dir, out = run_dir / "movie_encoder", run_dir / "movie_pairs", run_dir / "scene_pairs"
    sp = cfg.scene_pairs
    source = sp.pairs_source or cfg.movie_encoder.pairs_source
    input_hash = stage_input_hash(shots_dir / "DONE.json", feat_dir / "DONE.json",
                                  enc_dir / "DONE.json", pairs_dir / "DONE.json")
    # the device changes nothing in the result (tested): it is not part of the hash
    chash = config_hash({k: v for k, v in asdict(sp).items() if k != "device"} | {"source": source})
    slot = process_slot(shard)
    if not force and is_done(out, chash, input_hash):
        if slot.is_main:
            print(f"mine-scene-pairs: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    source_file = pairs_dir / f"{source}.parquet"
    if not source_file.is_file():
        raise ConfigError(f"scene_pairs.pairs_source {source!r}: {source_file} does not exist "
                          "(add it to movie_pairs.sources)")
    if exclusive:
        remove_stale_tmp(out)  # what a killed run left; nobody else writes here (the lock)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    (out / "DONE.json").unlink(missing_ok=True)
    stamp = f"{chash}:{input_hash}"

    movie_pairs = sorted({(r["movie_a"], r["movie_b"]) for r in pq.read_table(source_file).to_pylist()})
    size = sp.movie_pairs_per_shard
    units = [movie_pairs[i:i + size] for i in range(0, len(movie_pairs), size)]
    todo = []
    for u in range(len(units)):
        part = out / "parts" / unit_part(u)
        if not slot.mine(u):
            continue
        if not force and part.is_file() and part_stamp(part) == stamp and (out / unit_shard(u)).is_file():
            continue
        todo.append(u)

    if todo:
        device = _device(sp.device)
        feats = ShotFeatures(feat_dir)
        embed, shots = MovieEmbeddings(feats, enc_dir, device), ShotSamples(shots_dir)
        have = set(feats.movie_ids)
        bar = progress(total=sum(len(units[u]) for u in todo), desc=f"mining [{slot.rank + 1}/{slot.world}]",
                       unit="movie pair", position=slot.rank)
        for u in todo:
            rows, skipped = [], []
            for a, b in units[u]:
                missing = [m for m in (a, b) if m not in have]
                if missing:
                    skipped.append({"movie_a": a, "movie_b": b, "reason": f"no shot features for {', '.join(missing)}"})
                else:
                    mined = mine_pair(embed(a), embed(b), sp.shots_per_scene, sp.keep_fraction)
                    if mined.reason:
                        skipped.append({"movie_a": a, "movie_b": b, "reason": mined.reason})
                    for i, j, s in zip(mined.start_a.tolist(), mined.start_b.tolist(), mined.score.tolist()):
                        rows.append({"movie_a": a, "start_a": i, "movie_b": b, "start_b": j, "score": s,
                                     "source": source})
                bar.update()
            n = sp.shots_per_scene
            for r, row in enumerate(rows):
                row["key"], row["shard"] = f"{u:06d}_{r:06d}", unit_shard(u)

            def samples(rows=rows):
                for row in rows:
                    meta = {k: row[k] for k in ("movie_a", "start_a", "movie_b", "start_b", "score", "source")}
                    yield {"__key__": row["key"], "json": meta | {"n": n},
                           **scene_fields("a", shots(row["movie_a"])[row["start_a"]:row["start_a"] + n]),
                           **scene_fields("b", shots(row["movie_b"])[row["start_b"]:row["start_b"] + n])}

            write_shards(out / unit_shard(u), samples())
            write_parquet(out / "parts" / unit_part(u), part_table(rows, stamp, skipped))
        bar.close()

    slot.wait_for_everyone()
    if not slot.is_main and slot.state is not None:
        return 0
    for u in range(len(units)):
        if part_stamp(out / "parts" / unit_part(u)) != stamp:
            print(f"mine-scene-pairs: process {slot.rank}/{slot.world} done; other units still pending "
                  "— the last process to finish merges")
            return 0
    merged = merge_parts([out / "parts" / unit_part(u) for u in range(len(units))], out,
                         sp.report_movie_pairs, sp.report_scene_pairs)
    # units of an earlier, larger set of movie pairs (and parts of the older JSON format)
    prune(out / "parts", "*", {unit_part(u) for u in range(len(units))})
    prune(out, "scenes-*.tar", {unit_shard(u) for u in range(len(units))})
    rows, skipped, mined_pairs = merged.rows, merged.skipped, merged.mined_pairs
    # the report is part of the stage's artefacts: if it cannot be written the stage is not done
    # (the mined units stay; the rerun only merges and draws again)
    tmp_report = out / f"{TMP_PREFIX}{os.getpid()}-report"
    shutil.rmtree(tmp_report, ignore_errors=True)
    try:
        write_report(tmp_report, cfg, merged.top_movie_pairs, merged.top_rows, source)
        shutil.rmtree(out / "report", ignore_errors=True)
        tmp_report.rename(out / "report")
    except OSError as e:
        raise output_error(out / "report", e) from e
    finally:
        shutil.rmtree(tmp_report, ignore_errors=True)
    counts = {"movie_pairs": len(movie_pairs), "mined_movie_pairs": mined_pairs, "skipped": skipped,
              "scene_pairs": rows, "shards": len(units), "source": source}
    write_done(out, STAGE, chash, input_hash, counts, started, shots_per_scene=sp.shots_per_scene)
    print(f"mine-scene-pairs: {rows} scene pairs from {mined_pairs}/{len(movie_pairs)} {source} "
          f"movie pairs ({skipped} skipped) in {len(units)} shard(s) → {out}")
    if skipped:
        print(f"mine-scene-pairs: {skipped} skipped movie pairs and reasons: {out / 'failures.jsonl'}")
    return 0


