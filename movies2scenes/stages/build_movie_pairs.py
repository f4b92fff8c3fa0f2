"""Stage build_movie_pairs: catalogue (+ watch logs, synopses, KG triples) → run_dir/movie_pairs/.

Writes ``<source>.parquet`` (movie_a, movie_b, score) per source in ``movie_pairs.sources`` (and
``combined.parquet`` when ``movie_pairs.combined`` names sources), ``summary.json`` and
``DONE.json``. **Leakage guard**: only movies of the ``train`` split enter pairs; val/test/exclude/eval
movies never do, and the summary says how many were excluded. Bad metadata either fails with
``file:row: reason`` (malformed CSV, unknown ids, bad timestamps) or is a counted, documented skip
(duplicate log rows, movies without genres or synopsis, movies outside the knowledge graph).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

from movies2scenes.catalogue import load_catalogue
from movies2scenes.kg import read_triples
from movies2scenes.cowatch import cowatch_pairs_from_file
from movies2scenes.config import Config, config_hash
from movies2scenes.errors import CatalogueError, ConfigError
from movies2scenes.similarity import (Pairs, combine, genre_pairs, genre_share_rate, genre_synopsis_pairs, kg_pairs,
                                      random_pairs, synopsis_pairs)
from movies2scenes.integrity import file_record
from movies2scenes.store import file_fingerprint, write_json, write_parquet

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, Stage, StageContext

def why_no_pairs(source: str, catalogue, allowed: set[str], cfg: Config) -> str:
    """What the catalogue lacks for ``source`` to give pairs (for the error message)."""
    train = [m for m in catalogue if m.movie_id in allowed]
    where = f"{cfg.catalogue}"
    if len(train) < 2:
        return (f"{where} has {len(train)} movie(s) in the train split (pairs need 2; the split column "
                "sends the others to val/test/exclude/eval)")
    with_genres = sum(1 for m in train if m.genres)
    with_synopsis = sum(1 for m in train if (m.synopsis or "").strip())
    if source in ("genre", "kg", "genre_synopsis") and with_genres < 2:
        return f"{where}: {with_genres} of {len(train)} train movies have genres (the genres column is empty)"
    if source in ("synopsis", "genre_synopsis") and with_synopsis < 2:
        return f"{where}: {with_synopsis} of {len(train)} train movies have a synopsis (the synopsis column is empty)"
    if source == "genre":
        return f"{where}: no two train movies share a genre"
    if source == "cowatch":
        return (f"{cfg.watch_logs}: no user watched two train movies within movie_pairs.cowatch_lookahead="
                f"{cfg.movie_pairs.cowatch_lookahead} of each other (or the log is empty)")
    return "the metadata gave no similar movies"


class BuildMoviePairs(Stage):
    spec = STAGE_SPECS["build-movie-pairs"]

    def check(self) -> None:
        cfg = self.cfg
        if not cfg.catalogue:
            raise ConfigError("no catalogue given: set catalogue=PATH")
        self.catalogue = load_catalogue(cfg.catalogue)
        extra = []  # (what, path) of the files beside the catalogue
        if "cowatch" in cfg.movie_pairs.sources:
            if not cfg.watch_logs:
                raise ConfigError("movie_pairs.sources has cowatch but no watch_logs=PATH is given")
            extra.append(("watch-log", Path(cfg.watch_logs)))
        if "kg" in cfg.movie_pairs.sources and cfg.movie_pairs.kg_triples:
            extra.append(("KG triples", Path(cfg.movie_pairs.kg_triples)))
        if missing := [f"{p}: {what} file not found" for what, p in extra if not p.is_file()]:
            raise CatalogueError(missing)  # before the stage folder and its lock exist
        self.inputs = [Path(cfg.catalogue), *(p for _, p in extra)]

    def input_hash(self) -> str:
        return hashlib.sha256("".join(file_fingerprint(p) if p.is_file() else "missing"
                                      for p in self.inputs).encode()).hexdigest()[:16]

    def config_hash(self) -> str:
        return config_hash({"movie_pairs": asdict(self.cfg.movie_pairs), "seed": self.cfg.seed})

    def pairs(self, source: str, allowed: set[str], tmp: Path) -> Pairs:
        """One source's movie pairs among the ``allowed`` (train-split) movies."""
        cfg, mp, catalogue = self.cfg, self.cfg.movie_pairs, self.catalogue
        genres = {m.movie_id: m.genres for m in catalogue}
        synopses = {m.movie_id: m.synopsis for m in catalogue}
        if source == "cowatch":
            return cowatch_pairs_from_file(cfg.watch_logs, set(genres), allowed, mp.per_movie,
                                           mp.cowatch_lookahead, memory_limit=mp.cowatch_memory, temp_dir=tmp)
        if source == "genre":
            return genre_pairs(genres, allowed, mp.per_movie, cfg.seed)
        if source == "synopsis":
            return synopsis_pairs(synopses, allowed, mp.per_movie, mp.synopsis_model or None)
        if source == "genre_synopsis":
            return genre_synopsis_pairs(genres, synopses, allowed, mp.per_movie, mp.synopsis_model or None)
        if source == "random":
            return random_pairs(sorted(genres), allowed, mp.per_movie, cfg.seed)
        assert source == "kg", source  # config validation names the sources
        triples = [(m.movie_id, "genre", f"genre:{g}") for m in catalogue for g in m.genres]
        if mp.kg_triples:
            triples += read_triples(Path(mp.kg_triples))
        return kg_pairs(triples, {m: m for m in genres}, allowed, mp.per_movie,
                        mp.kg_method, mp.kg_dim, mp.kg_epochs, cfg.seed)

    def work(self, ctx: StageContext) -> Finished:
        mp, catalogue, out = self.cfg.movie_pairs, self.catalogue, ctx.out
        allowed = {m.movie_id for m in catalogue if m.split == "train"}
        excluded = len(catalogue) - len(allowed)
        results: dict[str, Pairs] = {}
        for source in mp.sources:
            t0 = time.time()
            results[source] = self.pairs(source, allowed, out / ".duckdb-tmp")
            print(f"build-movie-pairs: {source}: {len(results[source])} pairs in {time.time() - t0:.1f}s")
        if mp.combined:
            weights = dict(zip(mp.combined, mp.combined_weights or [1.0] * len(mp.combined)))
            results["combined"] = combine({s: results[s] for s in mp.combined}, weights, mp.per_movie)

        empty = {name: why_no_pairs(name, catalogue, allowed, self.cfg) for name, pairs in results.items()
                 if len(pairs) == 0 and name != "combined"}
        if empty:
            raise CatalogueError([f"movie_pairs.sources: {name} gave 0 movie pairs: {why}" for name, why in empty.items()]
                                 + ["nothing was marked done; give the missing metadata or drop those sources "
                                    "(e.g. movie_pairs.sources=[random] trains on random pairs, the paper's baseline)"])
        genre_sets = {m.movie_id: set(m.genres) for m in catalogue}
        summary = {"movies": len(catalogue), "train_movies": len(allowed), "excluded_movies": excluded,
                   "sources": {}}
        for name, pairs in results.items():
            write_parquet(out / f"{name}.parquet", pairs.to_table())
            summary["sources"][name] = {
                "pairs": len(pairs), "movies_covered": len(pairs.movies()),
                "partners_per_movie": round(pairs.partners_per_movie(), 3),
                "genre_share_rate": round(genre_share_rate(list(pairs.scores), genre_sets), 4),
                "skipped": pairs.skipped,
            }
        write_json(out / "summary.json", summary)
        files = {f"{name}.parquet": file_record(out / f"{name}.parquet") for name in results}
        counts = {n: len(p) for n, p in results.items()} | {"excluded_movies": excluded}
        say = [f"build-movie-pairs: {name}: {v['pairs']} pairs over {v['movies_covered']} movies, "
               f"{v['partners_per_movie']} partners per movie, genre shared by "
               + (f"{v['genre_share_rate']:.0%}" if v["genre_share_rate"] == v["genre_share_rate"] else "n/a")
               for name, v in summary["sources"].items()]
        return Finished(counts, files=files, extra={"catalogue": str(Path(self.cfg.catalogue).resolve())},
                        say=[*say, f"build-movie-pairs: {excluded} val/test/exclude/eval movie(s) "
                                                  f"kept out of every pair; details in {out / 'summary.json'}"])


def run(cfg: Config, force: bool = False) -> int:
    return BuildMoviePairs(cfg, force).run()
