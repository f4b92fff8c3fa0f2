"""The mined scene pairs on disk (``scene_pairs/``): how a unit of movie pairs is mined, each unit's part table (its rows, stamp and
skipped movie pairs in the Parquet metadata), the streaming merge of the parts into
``pairs.parquet`` + ``failures.jsonl``, and the mining report (adjacency heatmaps, contact sheet)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .artefacts import MovieEmbeddings, ShotSamples
from .config import Config
from .features import ShotFeatures
from .layout import RunLayout
from .mining import keep_count, mine_pair
from .store import atomic_path, decode_scene, iter_tar, scene_fields


PAIRS_SCHEMA = pa.schema([("movie_a", pa.string()), ("start_a", pa.int32()), ("movie_b", pa.string()),
                          ("start_b", pa.int32()), ("score", pa.float32()), ("source", pa.string()),
                          ("shard", pa.string()), ("key", pa.string())])


def unit_shard(unit: int) -> str:
    """A unit's webdataset shard under ``scene_pairs/``."""
    return f"scenes-{unit:06d}.tar"


class UnitMiner:
    """Mines the movie pairs of one unit: its rows (scene pairs) and the pairs it skipped, and the
    webdataset samples of those rows (keyframes of both scenes)."""

    def __init__(self, sp, source: str, feats: ShotFeatures, embed: MovieEmbeddings, shots: ShotSamples):
        self.sp, self.source, self.embed, self.shots = sp, source, embed, shots
        self.have = set(feats.movie_ids)

    def mine(self, u: int, movie_pairs: list[tuple[str, str]]) -> tuple[list[dict], list[dict]]:
        rows, skipped = [], []
        for a, b in movie_pairs:
            missing = [m for m in (a, b) if m not in self.have]
            if missing:
                skipped.append({"movie_a": a, "movie_b": b, "reason": f"no shot features for {', '.join(missing)}"})
            else:
                mined = mine_pair(self.embed(a), self.embed(b), self.sp.shots_per_scene, self.sp.keep_fraction)
                if mined.reason:
                    skipped.append({"movie_a": a, "movie_b": b, "reason": mined.reason})
                for i, j, s in zip(mined.start_a.tolist(), mined.start_b.tolist(), mined.score.tolist()):
                    rows.append({"movie_a": a, "start_a": i, "movie_b": b, "start_b": j, "score": s,
                                 "source": self.source})
        for r, row in enumerate(rows):
            row["key"], row["shard"] = f"{u:06d}_{r:06d}", unit_shard(u)
        return rows, skipped

    def samples(self, rows: list[dict]):
        n = self.sp.shots_per_scene
        for row in rows:
            meta = {k: row[k] for k in ("movie_a", "start_a", "movie_b", "start_b", "score", "source")}
            yield {"__key__": row["key"], "json": meta | {"n": n},
                   **scene_fields("a", self.shots(row["movie_a"])[row["start_a"]:row["start_a"] + n]),
                   **scene_fields("b", self.shots(row["movie_b"])[row["start_b"]:row["start_b"] + n])}



def part_table(rows: list[dict], stamp: str, skipped: list[dict], files: dict[str, list]) -> pa.Table:
    """One unit's rows as a table of ``PAIRS_SCHEMA``; in its metadata the stamp, the skipped pairs
    and the files the unit wrote (name → [size, sha256], ``movies2scenes.integrity``)."""
    table = pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA)
    return table.replace_schema_metadata({"stamp": stamp, "skipped": json.dumps(skipped, sort_keys=True),
                                          "files": json.dumps(files, sort_keys=True)})


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
            pool = 4 * scene_pairs_k  # enough to pick k pairs of distinct scenes from
            top_rows = sorted(top_rows + table.take(order[:pool]).to_pylist(),
                              key=lambda r: (-r["score"], r["key"]))[:pool]
    return Merged(rows, skipped, mined, [(a, b) for _, a, b in top_pairs], diverse(top_rows, scene_pairs_k))


def movie_labels(catalogue: str | Path | None) -> dict[str, str]:
    """movie id → "Title (genre, genre) [id]" from the run's catalogue, for figures a person
    judges; {} when there is no readable catalogue (ids are shown then)."""
    from .catalogue import load_catalogue
    from .errors import CatalogueError

    if not catalogue or not Path(catalogue).is_file():
        return {}
    try:
        movies = load_catalogue(catalogue)
    except CatalogueError:
        return {}
    return {m.movie_id: f"{m.title or m.movie_id}{' (' + ', '.join(m.genres) + ')' if m.genres else ''}"
                        f"{' [' + m.movie_id + ']' if m.title else ''}" for m in movies}


def diverse(rows: list[dict], k: int) -> list[dict]:
    """The first ``k`` of ``rows`` (best first) with at most one pair per scene: a row whose scene
    a or b is already shown is passed over (one scene paired with four others used to fill a
    third of the contact sheet)."""
    shown, out = set(), []
    for r in rows:
        sides = {(r["movie_a"], r["start_a"]), (r["movie_b"], r["start_b"])}
        if sides & shown:
            continue
        shown |= sides
        out.append(r)
        if len(out) == k:
            break
    return out


def write_report(rdir: Path, cfg: Config, top: list[tuple[str, str]], top_rows: list[dict], source: str) -> None:
    """Adjacency heatmaps of the best movie pairs ``top`` and a contact sheet of the best scene
    pairs ``top_rows``, into the folder ``rdir``."""
    from . import report

    out = RunLayout(cfg.run_dir).folder("scene_pairs")
    sp, n = cfg.scene_pairs, cfg.scene_pairs.shots_per_scene
    sections: list = []
    if not top_rows:
        report.write_html(rdir / "index.html", "Mined scene pairs", [("No scene pairs were mined", [], None)])
        return
    run = RunLayout(cfg.run_dir)
    embed = MovieEmbeddings(ShotFeatures(run.folder("shot_features")), run.folder("movie_encoder"), torch.device("cpu"))
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
    sections.append((f"Shot adjacency of the {len(top)} best movie pairs (red: kept, dashed: dropped; colour: "
                     "dot product of the movies' E_movie shot embeddings, unbounded, higher = more alike)",
                     images, None))
    shards: dict[str, dict[str, dict]] = {}
    wanted = {r["key"] for r in top_rows}
    for r in top_rows:
        if r["shard"] not in shards:
            shards[r["shard"]] = {s["__key__"]: s for s in iter_tar(out / r["shard"]) if s["__key__"] in wanted}
    name = movie_labels(cfg.catalogue)
    sheet = [(decode_scene(shards[r["shard"]][r["key"]], "a")[:, 0], decode_scene(shards[r["shard"]][r["key"]], "b")[:, 0],
              f"{name.get(r['movie_a'], r['movie_a'])} shots {r['start_a']}–{r['start_a'] + n - 1}  |  "
              f"{name.get(r['movie_b'], r['movie_b'])} shots {r['start_b']}–{r['start_b'] + n - 1}   "
              f"score {r['score']:.3f}") for r in top_rows]
    report.contact_sheet(rdir / "contact_sheet.png", sheet)
    sections.append((f"The {len(top_rows)} best scene pairs, at most one per scene (first keyframe of each shot)",
                     "contact_sheet.png",
                     [{k: r[k] for k in ("movie_a", "start_a", "movie_b", "start_b", "score")} for r in top_rows]))
    truth = ground_truth_precision(cfg, n, pairs_table=out / "pairs.parquet")
    if truth:
        sections.insert(0, (truth, [], None))
    report.write_html(rdir / "index.html", f"Mined scene pairs ({source}, n = {n})", sections)


def ground_truth_precision(cfg: Config, n: int, pairs_table: Path) -> str:
    """Where the run's world has ground truth (a demo world beside its catalogue), the mined pairs'
    precision against it — the share whose two windows have the same majority place — beside random
    windows of the same movie pairs (seeded): what the page's pictures cannot say (issue 42). ""
    otherwise."""
    import pyarrow.parquet as pq

    from .demo import detected_places

    if not cfg.catalogue or not pairs_table.is_file():
        return ""
    run = RunLayout(cfg.run_dir)
    places = detected_places(Path(cfg.catalogue).parent, run.folder("shots") / "index.parquet")
    if not places:
        return ""

    def same(a, i, b, j) -> bool:
        pa_, pb = places[a][i:i + n], places[b][j:j + n]
        return max(sorted(set(pa_)), key=pa_.count) == max(sorted(set(pb)), key=pb.count)

    rows = [r for r in pq.read_table(pairs_table, columns=["movie_a", "start_a", "movie_b", "start_b"]).to_pylist()
            if r["movie_a"] in places and r["movie_b"] in places]
    if not rows:
        return ""
    mined = float(np.mean([same(r["movie_a"], r["start_a"], r["movie_b"], r["start_b"]) for r in rows]))
    rng, draws = np.random.default_rng(0), []
    for a, b in sorted({(r["movie_a"], r["movie_b"]) for r in rows}):
        la, lb = len(places[a]) - n + 1, len(places[b]) - n + 1
        if la > 0 and lb > 0:
            draws += [same(a, int(rng.integers(la)), b, int(rng.integers(lb))) for _ in range(5)]
    chance = float(np.mean(draws)) if draws else float("nan")
    return (f"Against the demo world's ground truth: {100 * mined:.1f} % of the {len(rows)} mined scene pairs show "
            f"the same place (majority of their {n} shots); random windows of the same movie pairs: "
            f"{100 * chance:.1f} %. Mining helps only as far as the first number exceeds the second.")
