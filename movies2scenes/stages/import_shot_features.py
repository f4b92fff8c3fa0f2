"""``m2s import-shot-features SOURCE``: shot features made elsewhere (CLIP, in-house models) →
run_dir/shot_features/, a stage that train-movie-encoder, mine-scene-pairs and evaluate's
baseline read exactly like extract-shot-features' own (fp16 arrays, index.parquet, DONE.json).

SOURCE is a folder with one file per movie, named by the movie's id (``catalogue.safe_name``):

* ``<ID>.npy`` — a float (shots × dim) array, one row per shot of our ``shots/index.parquet``;
* ``<ID>.parquet`` — a column ``embedding`` (a list of floats per row) and either one row per our
  shot (optionally a ``shot`` column giving the order) or the user's own shot table in
  ``start_time`` / ``end_time`` (seconds): each of our shots then gets the overlap-weighted mean
  of the rows it overlaps (``features.align_by_time``).

A movie whose file is missing, has a different number of rows, a non-float dtype, a NaN row or
another dimension than the rest is a failure naming the movie, the file and the reason
(``failures.jsonl``); every other movie is imported and the stage is done with them (exit status
1 says some failed). Files of movies the shots stage does not hold are reported and ignored. The
stage's config hash is the source files' sha256, so replacing a file re-imports; extract-shot-
features refuses to overwrite imported features without ``--force``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from movies2scenes.catalogue import safe_name
from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.features import FeatureImportError, feature_file, read_source, write_index, write_movie_features
from movies2scenes.integrity import file_record, verified
from movies2scenes.progress import progress
from movies2scenes.store import atomic_path, file_kind, sha256_file

from movies2scenes.pipeline import STAGE_SPECS

from .kit import Finished, Stage, StageContext
from .protocol import done_record, prune

STAGE = "extract_shot_features"  # downstream stages read it as the shot_features stage it replaces


class ImportShotFeatures(Stage):
    """Writes extract-shot-features' folder from the user's own per-movie arrays."""

    spec = STAGE_SPECS["import-shot-features"]

    def __init__(self, cfg: Config, source: str | Path, force: bool = False):
        super().__init__(cfg, force)
        self.source = Path(source)

    def check(self) -> None:
        if not self.source.is_dir():
            raise ConfigError(f"{self.source}: not a folder (one <movie id>.npy or .parquet per movie)")
        done = done_record(self.run_layout.folder("shot_features"))
        if done and not done.get("imported_from") and not self.force:
            raise ConfigError(f"{self.run_layout.folder('shot_features')} holds the features extract-shot-features "
                              "made with E_shot; importing would replace them: --force to do so")

    def config_hash(self) -> str:
        source = self.source
        index = pq.read_table(verified(self.run_layout.folder("shots") / "index.parquet"),
                              columns=["movie_id", "shot", "start_time", "end_time"])
        self.shots: dict[str, list[dict]] = {}
        for r in index.to_pylist():
            self.shots.setdefault(r["movie_id"], []).append(r)
        entries = sorted(p for p in source.iterdir() if p.suffix.lower() in (".npy", ".parquet"))
        kinds = {p: file_kind(p) for p in entries if p.suffix in (".npy", ".parquet")}
        self.files = {p.stem: p for p, kind in kinds.items() if kind is None}
        self.odd = {p.stem: (p, kind) for p, kind in kinds.items() if kind is not None}  # named, then failed
        self.wrong_case = [p.name for p in entries if p.suffix not in (".npy", ".parquet")]
        doubles = sorted(s for s in self.files if (source / f"{s}.npy").is_file() and (source / f"{s}.parquet").is_file())
        if doubles:
            raise ConfigError(f"{source}: both .npy and .parquet for {', '.join(doubles[:5])}; keep one per movie")
        self.unknown = sorted(set(self.files) - {safe_name(m) for m in self.shots})
        if len(self.unknown) == len(self.files):  # never replace a stage's artefacts with nothing
            raise ConfigError(f"{source}: none of its {len(self.files)} .npy/.parquet file(s) is named after a movie "
                              f"of the shots stage ({len(self.shots)} movies{', e.g. ' + safe_name(min(self.shots)) + '.npy' if self.shots else ''}); "
                              "nothing was changed")
        return config_hash({"import": {name: sha256_file(p) for name, p in sorted(self.files.items())
                                       if name not in self.unknown}})

    def read_all(self, out: Path) -> tuple[list[dict], list[dict], int | None]:
        """Every movie's features written to ``out``: (index rows, failures, dimension)."""
        rows, failures, dim = [], [], None
        wanted = {m: self.files.get(safe_name(m)) for m in sorted(self.shots)}
        for movie, path in progress(wanted.items(), total=len(wanted), desc="import shot features", unit="movie"):
            try:
                if path is None and safe_name(movie) in self.odd:
                    odd, kind = self.odd[safe_name(movie)]
                    raise FeatureImportError(f"movie {movie!r}: {odd} is {kind}, not a file of features")
                if path is None:
                    raise FeatureImportError(f"movie {movie!r}: no {safe_name(movie)}.npy or .parquet in {self.source}")
                matrix = read_source(path, movie, self.shots[movie])
                if dim is not None and matrix.shape[1] != dim:
                    raise FeatureImportError(f"movie {movie!r} ({path.name}): dimension {matrix.shape[1]}, the other "
                                             f"movies have {dim}")
                dim = matrix.shape[1]
                rows.append(write_movie_features(out, movie, matrix))
            except FeatureImportError as e:
                failures.append({"movie_id": movie, "file": str(path) if path else None, "reason": str(e)})
        return rows, failures, dim

    def work(self, ctx: StageContext) -> Finished:
        out, source, unknown = ctx.out, self.source, self.unknown
        rows, failures, dim = self.read_all(out)
        if not rows:  # never replace a stage's artefacts with nothing (nothing was written yet)
            raise ConfigError(f"{source}: no movie could be imported; nothing was changed:\n  "
                              + "\n  ".join(f["reason"] for f in failures[:10]))
        write_index(out, rows)
        files = {name: f for r in rows for name, f in r["files"].items()}
        files["index.parquet"] = file_record(out / "index.parquet")
        prune(out, "features-*.npy", {feature_file(r["movie_id"]) for r in rows})
        if (out / "parts").is_dir():  # extract-shot-features' per-movie stamps: not these features
            prune(out / "parts", "*.json", set())
        with atomic_path(out / "failures.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
        counts = {"movies": len(rows), "shots": int(sum(r["num_shots"] for r in rows)), "dim": dim or 0,
                  "failed": len(failures)}
        say = [f"import-shot-features: {f['reason']}" for f in failures[:20]]
        if len(failures) > 20:
            say.append(f"import-shot-features: ... and {len(failures) - 20} more (all in {out / 'failures.jsonl'})")
        if unknown:
            say.append(f"import-shot-features: ignored {len(unknown)} file(s) of movies the shots stage does not hold: "
                       f"{', '.join(self.files[u].name for u in unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        if self.wrong_case:
            say.append(f"import-shot-features: ignored {len(self.wrong_case)} file(s) whose extension is not lower case "
                       f"(rename to .npy / .parquet): {', '.join(self.wrong_case[:5])}"
                       f"{' ...' if len(self.wrong_case) > 5 else ''}")
        say.append(f"import-shot-features: {len(rows)} movies, {counts['shots']} shots, {dim}-d from {source} → {out}"
                   + (f"; {len(failures)} failed" if failures else ""))
        return Finished(counts, files=files, extra={"imported_from": str(source.resolve()),
                                       "ignored_files": [self.files[u].name for u in unknown] + self.wrong_case},
                        say=say, exit_code=1 if failures else 0)


def run(cfg: Config, source: str, force: bool = False) -> int:
    return ImportShotFeatures(cfg, source, force).run()
