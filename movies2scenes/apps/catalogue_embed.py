"""``m2s embed --catalogue CAT --encoder EXPORT --out DIR``: a whole catalogue's scene embeddings as
a per-item job on the executor (issue 43) — the stage kit's protocol outside a run directory.

One item is one catalogue movie: its windows of n shots embedded by the exported encoder, written as
``DIR/scenes-<ID>.parquet`` (the rows of ``m2s embed``: video, scene, shots, frames, times,
embedding) and then its part record ``DIR/parts/<ID>.json`` stamped with the settings, the encoder's
files and the video's fingerprint. A killed run resumes from the parts; a movie whose video, the
encoder or the settings changed is embedded again, the others are not. It runs locally, as a
launch's share (``--shard i/n``) or on Ray (``--executor ray``: each worker loads the encoder once
and keeps it for every movie it is sent). A video that cannot be read is one failed movie
(``failures.jsonl``); the others go on. The merge writes ``index.parquet`` (movie → file, scenes) and
``DONE.json`` with every file's sha256; ``m2s index DIR`` indexes the folder.

``--shots RUN/shots`` reuses a run's shots stage: a movie whose video that stage processed with the
same shot settings (same fingerprint, same config hash) is embedded from its stored keyframes and
shot times — no second decode; the others are decoded. Stored keyframes are the run's (resized,
encoded) ones, decoded ones come straight from the video, so a movie's embeddings depend on which
it was: each part and the index say ``source`` (``shots`` or ``decoded``), and the choice is part of
the stamp, so a resumed run never mixes them for one movie."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from movies2scenes.catalogue import Movie, duplicate_videos, load_catalogue, safe_name, video_fingerprints
from movies2scenes.config import Config, config_hash
from movies2scenes.errors import ConfigError
from movies2scenes.integrity import file_record, read_done, verified
from movies2scenes.layout import DONE
from movies2scenes.pipeline import EMBED_CATALOGUE
from movies2scenes.stages.kit import Finished, PerItemStage, StageContext
from movies2scenes.stages.protocol import prune, record_stamp
from movies2scenes.store import TMP_PREFIX, atomic_path, write_parquet

RECORD = EMBED_CATALOGUE.record


def scene_schema(dim: int) -> pa.Schema:
    """The rows of ``m2s embed``: one per window of n shots."""
    return pa.schema([("video", pa.string()), ("scene", pa.int32()), ("start_shot", pa.int32()),
                      ("end_shot", pa.int32()), ("start_frame", pa.int64()), ("end_frame", pa.int64()),
                      ("start_time", pa.float64()), ("end_time", pa.float64()),
                      ("embedding", pa.list_(pa.float32(), dim))])


def scene_file(movie_id: str) -> str:
    return f"scenes-{safe_name(movie_id)}.parquet"


def is_catalogue_embeddings(path: Path) -> bool:
    """A folder this command wrote (its DONE record, or parts of an unfinished run), or an empty one."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / DONE).is_file():
        try:
            return read_done(path / DONE).get("stage") == RECORD
        except Exception:  # noqa: BLE001 - a damaged record: not recognisably ours
            return False
    ours = ("parts", "index.parquet", "failures.jsonl")
    return all(p.name in ours or p.name.startswith(("scenes-", ".lock", TMP_PREFIX)) for p in path.iterdir())


class RunShots:
    """A run's shots stage, for the movies it processed with these shot settings: video fingerprint →
    (its movie id there, its shots' frames and times)."""

    def __init__(self, shots_dir: Path, shots_hash: str, prints: dict[str, str]):
        self.dir = Path(shots_dir)
        done = read_done(self.dir / DONE)
        if done.get("stage") != "detect_shots":
            raise ConfigError(f"--shots {self.dir}: not the folder of a finished detect-shots stage")
        self.same_settings = done.get("config_hash") == shots_hash
        self.by_print: dict[str, str] = {}
        if self.same_settings:
            wanted = set(prints.values())
            for part in sorted((self.dir / "parts").glob("*.json")):
                rec = json.loads(part.read_text())
                if rec.get("status") == "ok" and rec.get("fingerprint") in wanted:
                    self.by_print.setdefault(rec["fingerprint"], rec["movie_id"])
        self._by_movie: dict[str, list[dict]] | None = None
        self._samples = None

    def shots(self, movie_id: str) -> list[dict]:
        """The movie's shots (frames, times) in shot order; the index is read once per process."""
        if self._by_movie is None:
            cols = ["movie_id", "shot", "start_frame", "end_frame", "start_time", "end_time"]
            self._by_movie = {}
            for r in pq.read_table(verified(self.dir / "index.parquet"), columns=cols).to_pylist():
                self._by_movie.setdefault(r["movie_id"], []).append(r)
            for rows in self._by_movie.values():
                rows.sort(key=lambda r: r["shot"])
        return self._by_movie[movie_id]

    def samples(self):
        """The run's stored keyframes (``artefacts.ShotSamples``), opened once per process."""
        if self._samples is None:
            from movies2scenes.artefacts import ShotSamples

            self._samples = ShotSamples(self.dir)
        return self._samples


class EmbedCatalogue(PerItemStage):
    spec = EMBED_CATALOGUE

    def __init__(self, cfg: Config, encoder_dir: str, out: str, n: int | None, stride: int, batch: int,
                 shots_dir: str | None = None, force: bool = False, shard: str | None = None, alone: bool = False):
        super().__init__(cfg, force, shard)
        self.encoder_dir, self.out, self.stride, self.batch = Path(encoder_dir), Path(out), stride, batch
        self.shots_dir, self.n, self.alone = shots_dir, n, alone
        self._encoder = None

    def folder(self) -> Path:
        return self.out

    def upstream(self) -> list[str]:
        return []

    def check(self) -> None:
        from movies2scenes.export import scene_settings

        if self.out.exists() and not is_catalogue_embeddings(self.out) and not self.force:
            raise ConfigError(f"{self.out} exists and is not a folder of `m2s embed --catalogue`; choose another "
                              "--out (or --force)")
        settings = scene_settings(self.encoder_dir)
        self.n = self.n or int(settings["shots_per_scene"])
        self.catalogue = sorted(load_catalogue(self.cfg.catalogue), key=lambda m: m.movie_id)
        self.prints = video_fingerprints(self.catalogue)
        self.duplicates = duplicate_videos(self.prints)
        self.encoder_stamp = self.encoder_files()
        self.run_shots = RunShots(Path(self.shots_dir), config_hash(self.cfg.shots), self.prints) \
            if self.shots_dir else None

    def encoder_files(self) -> str:
        """What the encoder's embeddings depend on: its export record's stamp, or its files' bytes."""
        done = self.encoder_dir / DONE
        if done.is_file():
            return record_stamp(read_done(done))
        digest = hashlib.sha256()
        for p in sorted(self.encoder_dir.iterdir()):
            if p.is_file():
                digest.update(p.name.encode() + hashlib.sha256(p.read_bytes()).digest())
        return digest.hexdigest()[:16]

    def input_hash(self) -> str:
        """The encoder, and each movie's id, video, fingerprint and source (a run's shots, or decoded)."""
        movies = [[m.movie_id, str(m.video), self.prints[m.movie_id], self.source(m)] for m in self.catalogue]
        return hashlib.sha256(json.dumps([self.encoder_stamp, movies]).encode()).hexdigest()[:16]

    def config_hash(self) -> str:
        return config_hash({"shots": asdict(self.cfg.shots), "n": self.n, "stride": self.stride, "batch": self.batch}
                           | ({"alone": True} if self.alone else {}))

    def items(self, ctx: StageContext) -> list[Movie]:
        return self.catalogue

    def source(self, movie: Movie) -> str:
        reuse = self.run_shots is not None and self.prints[movie.movie_id] in self.run_shots.by_print
        return "shots" if reuse else "decoded"

    def stamp(self, ctx: StageContext, movie: Movie) -> str:
        return f"{ctx.config_hash}:{self.encoder_stamp}:{self.prints[movie.movie_id]}:{self.source(movie)}"

    def accepts(self, ctx: StageContext, movie: Movie, rec: dict) -> bool:
        return rec.get("stamp") == self.stamp(ctx, movie)

    def size(self, ctx: StageContext, movie: Movie) -> float:
        try:
            return float(Path(movie.video).stat().st_size)
        except OSError:
            return 0.0

    def encoder(self):
        """The exported encoder, loaded once per process (or Ray worker) and kept."""
        import torch

        from movies2scenes.export import load_export

        if self._encoder is None:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self._encoder = load_export(self.encoder_dir, self.device)
            self._encoder.alone = self.alone  # --alone: no movie context even where the head was trained in it
        return self._encoder

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_encoder"} | {"_encoder": None}

    def process_item(self, ctx: StageContext, movie: Movie) -> dict:
        from movies2scenes.video import VideoError

        base = {"movie_id": movie.movie_id, "video": str(movie.video), "stamp": self.stamp(ctx, movie)}
        first = self.duplicates.get(movie.movie_id)
        if first is not None:
            return base | {"status": "failed", "reason": f"the same video as movie {first!r}: embedded once, for that id"}
        try:
            rows = self.embed_movie(movie)
        except (VideoError, OSError) as e:
            return base | {"status": "failed", "reason": str(e)}
        name = scene_file(movie.movie_id)
        write_parquet(ctx.out / name, pa.Table.from_pylist(rows, schema=scene_schema(self.encoder().num_features)))
        return base | {"status": "ok", "scenes": len(rows), "source": self.source(movie), "file": name,
                       "files": {name: file_record(ctx.out / name)}}

    def embed_movie(self, movie: Movie) -> list[dict]:
        from movies2scenes.retrieval import embed_video, scene_windows
        from movies2scenes.video import VideoError

        encoder = self.encoder()
        if self.source(movie) == "shots":
            from movies2scenes.evaluation import embed_clips

            run_id = self.run_shots.by_print[self.prints[movie.movie_id]]
            shots = self.run_shots.shots(run_id)
            spans = scene_windows(len(shots), self.n, self.stride)
            emb = embed_clips(encoder, self.run_shots.samples(), [(run_id, s, e) for s, e in spans], self.batch)
            spans = [(s, e, shots[s]["start_frame"], shots[e - 1]["end_frame"], shots[s]["start_time"],
                      shots[e - 1]["end_time"]) for s, e in spans]
        else:
            emb, windows = embed_video(movie.video, encoder, self.cfg.shots, self.n, self.stride, self.batch, self.device)
            spans = [(w.start_shot, w.end_shot, w.start_frame, w.end_frame, w.start_time, w.end_time) for w in windows]
        emb = np.asarray(emb, np.float32)
        if len(emb) and not np.isfinite(emb).all():
            raise VideoError(f"non-finite embedding(s): the encoder {self.encoder_dir} gives NaN/inf")
        return [{"video": str(movie.video), "scene": i, "start_shot": s, "end_shot": e, "start_frame": int(f0),
                 "end_frame": int(f1), "start_time": float(t0), "end_time": float(t1), "embedding": x.tolist()}
                for i, (x, (s, e, f0, f1, t0, t1)) in enumerate(zip(emb, spans))]

    def lost_part(self, ctx: StageContext, movie: Movie, why: str) -> dict:
        return {"movie_id": movie.movie_id, "video": str(movie.video), "stamp": self.stamp(ctx, movie),
                "status": "failed", "reason": f"not processed: {why}"}

    def merge(self, ctx: StageContext, items: list[Movie]) -> Finished:
        out = ctx.out
        parts = [self.part(ctx, m) for m in items]
        ok = [p for p in parts if p["status"] == "ok"]
        failed = [{"movie_id": p["movie_id"], "video": p["video"], "reason": p["reason"]} for p in parts
                  if p["status"] != "ok"]
        write_parquet(out / "index.parquet", pa.Table.from_pylist(
            [{k: p[k] for k in ("movie_id", "video", "file", "scenes", "source")} for p in ok],
            schema=pa.schema([("movie_id", pa.string()), ("video", pa.string()), ("file", pa.string()),
                              ("scenes", pa.int64()), ("source", pa.string())])))
        with atomic_path(out / "failures.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failed))
        prune(out, "scenes-*.parquet", {p["file"] for p in ok})
        files = {name: f for p in ok for name, f in p["files"].items()}
        files["index.parquet"] = file_record(out / "index.parquet")
        counts = {"movies": len(parts), "ok": len(ok), "failed": len(failed),
                  "scenes": int(sum(p["scenes"] for p in ok)), "from_run_shots": sum(p["source"] == "shots" for p in ok)}
        say = [f"m2s embed: {counts['scenes']} scenes of {len(ok)}/{len(parts)} movies (n = {self.n} shots, stride "
               f"{self.stride}; {counts['from_run_shots']} from the run's stored shots) → {out}"
               + (f"; failures: {out / 'failures.jsonl'}" if failed else "")]
        return Finished(counts, files=files, extra={"encoder": str(self.encoder_dir.resolve()), "n": self.n},
                        say=say, exit_code=0 if ok or not parts else 1)


def catalogue_files(folder: Path) -> list[Path]:
    """The per-movie files of a finished ``m2s embed --catalogue`` folder, in movie order, each as
    its DONE record lists it (sizes checked), for ``m2s index``."""
    from movies2scenes.integrity import StageFiles

    done = read_done(folder / DONE)
    if done.get("stage") != RECORD:
        raise ConfigError(f"{folder}: not a folder of `m2s embed --catalogue` (its DONE.json is {done.get('stage')!r})")
    StageFiles.of(folder, done).check_present()
    rows = pq.read_table(verified(folder / "index.parquet"), columns=["file"]).to_pylist()
    return [folder / r["file"] for r in rows]
