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

import json
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.data import ShardCache
from movies2scenes.features import ShotFeatures
from movies2scenes.mining import keep_count, mine_pair
from movies2scenes.progress import progress
from movies2scenes.store import (
    TMP_PREFIX,
    atomic_path,
    output_error,
    remove_stale_tmp,
    decode_scene,
    iter_tar,
    scene_fields,
    write_parquet,
    write_shards,
)

from ._stage import is_done, process_slot, prune, stage_input_hash, stage_lock, write_done
from .train_movie_encoder import load_movie_encoder

STAGE = "mine_scene_pairs"


PAIRS_SCHEMA = pa.schema([("movie_a", pa.string()), ("start_a", pa.int32()), ("movie_b", pa.string()),
                          ("start_b", pa.int32()), ("score", pa.float32()), ("source", pa.string()),
                          ("shard", pa.string()), ("key", pa.string())])


def unit_part(unit: int) -> str:
    return f"{unit:06d}.parquet"


def part_table(rows: list[dict], stamp: str, skipped: list[dict]) -> pa.Table:
    """One unit's rows as a table of ``PAIRS_SCHEMA``; stamp and skipped pairs in its metadata."""
    table = pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA)
    return table.replace_schema_metadata({"stamp": stamp, "skipped": json.dumps(skipped, sort_keys=True)})


def part_stamp(path: Path) -> str | None:
    """The stamp of a unit's part, or None where there is none or it cannot be read."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    return meta.get(b"stamp", b"").decode() or None


def unit_shard(unit: int) -> str:
    return f"scenes-{unit:06d}.tar"


class MovieEmbeddings:
    """E_movie-without-last-FC shot embeddings of whole movies (standardised as in training), with a
    small LRU cache: units list pairs sorted by movie, so a movie is embedded about once per unit."""

    def __init__(self, feats: ShotFeatures, enc_dir: Path, device: torch.device, cache: int = 16):
        from .train_movie_encoder import checked_movie_config

        c = checked_movie_config(enc_dir)
        self.mean = np.asarray(c["feature_mean"], np.float32)
        self.std = np.asarray(c["feature_std"], np.float32)
        self.model = load_movie_encoder(enc_dir, device)
        self.feats, self.device, self.size = feats, device, cache
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def __call__(self, movie_id: str) -> torch.Tensor:
        if movie_id in self.cache:
            self.cache.move_to_end(movie_id)
            return self.cache[movie_id]
        x = (np.asarray(self.feats.movie(movie_id), np.float32) - self.mean) / self.std
        e = self.model.shot_embeddings(torch.from_numpy(x).to(self.device)).float()
        self.cache[movie_id] = e
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return e


class ShotSamples:
    """Stored shot samples (keyframe fields) of a movie in shot order, from its shot shard (read
    sequentially and cached by ``data.ShardCache``)."""

    def __init__(self, shots_dir: Path, cache: int = 8):
        index = pq.read_table(shots_dir / "index.parquet", columns=["movie_id", "shard"]).to_pylist()
        self.shard = {r["movie_id"]: r["shard"] for r in index}
        self.cache = ShardCache(shots_dir, cache)

    def __call__(self, movie_id: str) -> list[dict[str, bytes]]:
        samples = list(self.cache.shard(self.shard[movie_id]).values())
        for i, s in enumerate(samples):
            if json.loads(s["json"])["shot"] != i:
                raise ValueError(f"{self.shard[movie_id]}: shot {i} out of order")
        return samples


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


@dataclass
class Merged:
    rows: int
    skipped: int
    mined_pairs: int
    top_movie_pairs: list[tuple[str, str]]  # best first, by their best scene pair's score
    top_rows: list[dict]  # the best scene pairs, best first


def merge_parts(parts: list[Path], out: Path, movie_pairs_k: int, scene_pairs_k: int) -> Merged:
    """Stream the units' parts into ``out/pairs.parquet`` and ``out/failures.jsonl`` (both atomic),
    holding one part at a time plus the report's top-k movie pairs and scene pairs."""
    rows = skipped = mined = 0
    top_pairs: list[tuple[float, str, str]] = []  # (score, movie_a, movie_b), the k best so far
    top_rows: list[dict] = []
    with atomic_path(out / "pairs.parquet") as tmp_pairs, atomic_path(out / "failures.jsonl") as tmp_fail, \
            pq.ParquetWriter(tmp_pairs, PAIRS_SCHEMA) as writer, open(tmp_fail, "w") as fail:
        for path in parts:
            table = pq.read_table(path)
            fail_rows = json.loads(table.schema.metadata[b"skipped"])
            fail.write("".join(json.dumps(s, sort_keys=True) + "\n" for s in fail_rows))
            skipped += len(fail_rows)
            table = table.replace_schema_metadata(None)
            writer.write_table(table)
            rows += table.num_rows
            if not table.num_rows:
                continue
            per_pair = table.group_by(["movie_a", "movie_b"]).aggregate([("score", "max")]).to_pylist()
            mined += len(per_pair)  # units hold disjoint movie pairs
            top_pairs = sorted(top_pairs + [(r["score_max"], r["movie_a"], r["movie_b"]) for r in per_pair],
                               key=lambda t: (-t[0], t[1], t[2]))[:movie_pairs_k]
            order = np.lexsort((np.asarray(table["key"].to_pylist()), -table["score"].to_numpy()))
            top_rows = sorted(top_rows + table.take(order[:scene_pairs_k]).to_pylist(),
                              key=lambda r: (-r["score"], r["key"]))[:scene_pairs_k]
    return Merged(rows, skipped, mined, [(a, b) for _, a, b in top_pairs], top_rows)


def write_report(rdir: Path, cfg: Config, top: list[tuple[str, str]], top_rows: list[dict], source: str) -> None:
    """Adjacency heatmaps of the best movie pairs ``top`` and a contact sheet of the best scene
    pairs ``top_rows``, into the folder ``rdir``."""
    from movies2scenes import report

    out = Path(cfg.run_dir) / "scene_pairs"
    sp, n = cfg.scene_pairs, cfg.scene_pairs.shots_per_scene
    sections: list = []
    if not top_rows:
        report.write_html(rdir / "index.html", "Mined scene pairs", [("No scene pairs were mined", [], None)])
        return
    run_dir = Path(cfg.run_dir)
    embed = MovieEmbeddings(ShotFeatures(run_dir / "shot_features"), run_dir / "movie_encoder", torch.device("cpu"))
    images = []
    for idx, (a, b) in enumerate(top):
        xa, xb = embed(a), embed(b)
        full = mine_pair(xa, xb, n, 1.0)
        kept = keep_count(full.chosen, sp.keep_fraction)
        name = f"adjacency-{idx}.png"
        report.adjacency_figure(rdir / name, (xa @ xb.T).numpy(), full.start_a, full.start_b, kept, n,
                                f"{a} × {b} ({source}): {full.chosen} chosen, {kept} kept",
                                f"shots of {b}", f"shots of {a}")
        images.append(name)
    sections.append((f"Shot adjacency of the {len(top)} best movie pairs (red: kept, dashed: dropped)",
                     images, None))
    shards: dict[str, dict[str, dict]] = {}
    wanted = {r["key"] for r in top_rows}
    for r in top_rows:
        if r["shard"] not in shards:
            shards[r["shard"]] = {s["__key__"]: s for s in iter_tar(out / r["shard"]) if s["__key__"] in wanted}
    sheet = [(decode_scene(shards[r["shard"]][r["key"]], "a")[:, 0], decode_scene(shards[r["shard"]][r["key"]], "b")[:, 0],
              f"{r['movie_a']} shots {r['start_a']}–{r['start_a'] + n - 1}  |  {r['movie_b']} shots "
              f"{r['start_b']}–{r['start_b'] + n - 1}   score {r['score']:.3f}") for r in top_rows]
    report.contact_sheet(rdir / "contact_sheet.png", sheet)
    sections.append((f"The {len(top_rows)} best scene pairs (first keyframe of each shot)", "contact_sheet.png",
                     [{k: r[k] for k in ("movie_a", "start_a", "movie_b", "start_b", "score")} for r in top_rows]))
    report.write_html(rdir / "index.html", f"Mined scene pairs ({source}, n = {n})", sections)
