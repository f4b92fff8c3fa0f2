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
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from movies2scenes.catalogue import Movie, load_catalogue, safe_name
from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.progress import progress
from movies2scenes.shots import check_decoded, detect_shots, make_detector
from movies2scenes.store import (
    OutputError,
    atomic_path,
    output_error,
    file_fingerprint,
    sha256_file,
    read_json,
    remove_stale_tmp,
    write_json,
    write_parquet,
    write_shards,
)
from movies2scenes.video import FrameReader, VideoError, probe, scaled_size

from ._stage import Slot, is_done, part_name, process_slot, prune, stage_lock, write_done

STAGE = "detect_shots"


def shard_name(movie_id: str) -> str:
    return f"shots-{safe_name(movie_id)}.tar"


def _encode_frames(frames: np.ndarray, cfg) -> dict:
    if cfg.image_format == "npy":
        return {"frames.npy": frames}
    out = {}
    for i, rgb in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out[f"{i}.jpg"] = buf.tobytes()
    return out


def process_movie(movie: Movie, out_dir: Path, cfg) -> dict:
    """Detect shots of one movie and write its shard. Returns its part record (ok or failed)."""
    started = time.time()
    record = {"movie_id": movie.movie_id, "video": str(movie.video)}
    shard_path = out_dir / shard_name(movie.movie_id)
    try:
        info = probe(movie.video)
        work = cfg.work_size or cfg.keyframe_size
        work_size = scaled_size(info.width, info.height, work)
        kf_size = scaled_size(info.width, info.height, cfg.keyframe_size)
        detector = make_detector(cfg.detector, cfg.threshold, cfg.min_shot_frames)
        reader = FrameReader(movie.video, work_size, cfg.decode_threads, cfg.decoder, info.container)
        frames = iter(reader)
        shots_out: list[dict] = []
        key_base = safe_name(movie.movie_id)

        def samples():
            lookahead = max(64, 4 * cfg.min_shot_frames)  # > any detector's reporting delay
            for shot in detect_shots(frames, info.fps, detector, cfg.keyframes, kf_size,
                                     cfg.max_buffer_frames, lookahead, cfg.gradual, cfg.min_shot_frames):
                meta = {
                    "movie_id": movie.movie_id,
                    "shot": shot.index,
                    "start_frame": shot.start,
                    "end_frame": shot.end,
                    "fps": info.fps,
                    "keyframe_frames": shot.keyframe_frames,
                    "transition_in": list(shot.transition_in) if shot.transition_in else None,
                }
                shots_out.append(meta)
                yield {"__key__": f"{key_base}_{shot.index:06d}", "json": meta,
                       **_encode_frames(shot.keyframes, cfg)}

        # Write under a temporary name; only checks that pass let it become the shard.
        tmp_shard = shard_path.with_name(f".tmp-unchecked-{shard_path.name}")
        try:
            write_shards(tmp_shard, samples())
            total = shots_out[-1]["end_frame"] if shots_out else 0
            warning = check_decoded(total, info, cfg)
            times = reader.times if reader.times is not None and len(reader.times) == total + 1 \
                else np.arange(total + 1) / info.fps  # presentation times (exact on variable frame rate)
            for s in shots_out:
                s["start_time"] = round(float(times[s["start_frame"]]), 6)
                s["end_time"] = round(float(times[s["end_frame"]]), 6)
            digest = sha256_file(tmp_shard)  # downstream per-movie stamps (features) use it
            try:
                tmp_shard.replace(shard_path)
            except OSError as e:
                raise output_error(shard_path, e) from e
        finally:
            tmp_shard.unlink(missing_ok=True)
        record.update(
            status="ok", fps=info.fps, width=info.width, height=info.height, codec=info.codec,
            num_frames=total, keyframe_width=kf_size[0], keyframe_height=kf_size[1],
            shard=shard_path.name, shard_sha256=digest, shots=shots_out, decoder=reader.decoder,
        )
        if reader.note:
            record["decoder_note"] = reader.note
        if warning:
            record["warning"] = warning
    except OutputError:
        raise  # our own write failed (disk full, permissions): not the movie's fault — stop the stage
    except VideoError as e:
        shard_path.unlink(missing_ok=True)
        record.update(status="failed", reason=str(e))
    except Exception as e:  # a bad input must never stop the others
        shard_path.unlink(missing_ok=True)
        record.update(status="failed", reason=f"unexpected {type(e).__name__}: {e}")
    record["elapsed_s"] = round(time.time() - started, 3)
    return record


def _fingerprint(movie: Movie) -> str:
    """Never blocks: a FIFO or device is not opened (probe() records it as not a regular file)."""
    try:
        return file_fingerprint(movie.video)
    except ValueError:
        return "not-a-regular-file"
    except OSError:
        return "missing"


def run(cfg: Config, shard: str | None = None, strict: bool = False, force: bool = False) -> int:
    if not cfg.catalogue:
        raise ConfigError("no catalogue given: set catalogue=PATH (CSV or JSONL, see README)")
    # sorted by id: the catalogue's row order changes neither the work split nor the artefacts
    catalogue = sorted(load_catalogue(cfg.catalogue), key=lambda m: m.movie_id)
    out_dir = Path(cfg.run_dir) / "shots"
    with stage_lock(out_dir, shard) as lock:
        return _run(cfg, catalogue, out_dir, shard, strict, force, lock.exclusive)


def _run(cfg: Config, catalogue, out_dir: Path, shard: str | None, strict: bool, force: bool,
         exclusive: bool) -> int:
    started = time.time()
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    slot = process_slot(shard)

    chash = config_hash(cfg.shots)
    prints = [_fingerprint(m) for m in catalogue]
    input_hash = hashlib.sha256(
        json.dumps([[m.movie_id, str(m.video), p] for m, p in zip(catalogue, prints)]).encode()
    ).hexdigest()[:16]
    if not force and is_done(out_dir, chash, input_hash):
        failed = read_json(out_dir / "DONE.json").get("counts", {}).get("failed", 0)
        if slot.is_main:
            print(f"detect-shots: {out_dir} is up to date (DONE.json matches); nothing to do"
                  + (f"; {failed} movie(s) failed (reasons in {out_dir / 'failures.jsonl'})" if failed else ""))
        return 1 if strict and failed else 0
    if exclusive:
        remove_stale_tmp(out_dir)
    (out_dir / "DONE.json").unlink(missing_ok=True)

    todo = []
    for i, (movie, fp) in enumerate(zip(catalogue, prints)):
        if not slot.mine(i):
            continue
        part = parts_dir / part_name(movie.movie_id)
        if not force and part.is_file():
            rec = read_json(part)
            if (rec.get("status") == "ok" and rec.get("config_hash") == chash
                    and rec.get("fingerprint") == fp and (out_dir / shard_name(movie.movie_id)).is_file()):
                continue
        todo.append((movie, fp))

    bar = progress(todo, desc=f"shots [{slot.rank + 1}/{slot.world}]", unit="movie", position=slot.rank)
    n_frames = 0
    t0 = time.time()
    for movie, fp in bar:
        rec = process_movie(movie, out_dir, cfg.shots)
        rec.update(config_hash=chash, fingerprint=fp)
        write_json(parts_dir / part_name(movie.movie_id), rec)
        if rec["status"] == "ok":
            n_frames += rec["num_frames"]
        else:
            bar.write(f"detect-shots: {movie.movie_id}: FAILED: {rec['reason']}", file=sys.stderr)
        bar.set_postfix(fps=f"{n_frames / max(time.time() - t0, 1e-9):.0f}")
    bar.close()

    slot.wait_for_everyone()
    if not slot.is_main and slot.state is not None:
        return 0
    return merge(cfg, catalogue, prints, chash, input_hash, started, strict, slot, exclusive)


def merge(cfg: Config, catalogue, prints, chash, input_hash, started, strict, slot: Slot,
          exclusive: bool = False) -> int:
    """Gather every movie's part into index.parquet + failures.jsonl + DONE.json (idempotent)."""
    out_dir = Path(cfg.run_dir) / "shots"
    parts_dir = out_dir / "parts"
    records, pending = [], []
    for movie, fp in zip(catalogue, prints):
        part = parts_dir / part_name(movie.movie_id)
        rec = read_json(part) if part.is_file() else None
        if not rec or rec.get("config_hash") != chash or rec.get("fingerprint") != fp:
            pending.append(movie.movie_id)
        else:
            records.append(rec)
    if pending:
        print(f"detect-shots: process {slot.rank}/{slot.world} done; {len(pending)} movie(s) still "
              "pending in other shards — the last process to finish merges the index")
        return 0

    cols = {k: [] for k in ("movie_id", "shot", "start_frame", "end_frame", "start_time",
                            "end_time", "fps", "keyframe_frames", "transition_start", "transition_end",
                            "shard", "shard_sha256", "key")}
    failures, warnings = [], []
    for rec in records:
        if rec["status"] != "ok":
            failures.append({"movie_id": rec["movie_id"], "video": rec["video"], "reason": rec["reason"]})
            continue
        if rec.get("warning"):  # processed, but the user should know (e.g. fewer frames than declared)
            warnings.append({"movie_id": rec["movie_id"], "video": rec["video"], "status": "warning",
                             "reason": rec["warning"]})
        key_base = safe_name(rec["movie_id"])
        for s in rec["shots"]:
            cols["movie_id"].append(rec["movie_id"])
            cols["shot"].append(s["shot"])
            cols["start_frame"].append(s["start_frame"])
            cols["end_frame"].append(s["end_frame"])
            cols["start_time"].append(s.get("start_time", s["start_frame"] / s["fps"]))
            cols["end_time"].append(s.get("end_time", s["end_frame"] / s["fps"]))
            cols["fps"].append(s["fps"])
            cols["keyframe_frames"].append(s["keyframe_frames"])
            span = s.get("transition_in") or [-1, -1]
            cols["transition_start"].append(span[0])
            cols["transition_end"].append(span[1])
            cols["shard"].append(rec["shard"])
            cols["shard_sha256"].append(rec["shard_sha256"])
            cols["key"].append(f"{key_base}_{s['shot']:06d}")
    schema = pa.schema([
        ("movie_id", pa.string()), ("shot", pa.int32()),
        ("start_frame", pa.int64()), ("end_frame", pa.int64()), ("start_time", pa.float64()),
        ("end_time", pa.float64()), ("fps", pa.float64()), ("keyframe_frames", pa.list_(pa.int64())),
        ("transition_start", pa.int64()), ("transition_end", pa.int64()), ("shard", pa.string()),
        ("shard_sha256", pa.string()), ("key", pa.string()),
    ])
    write_parquet(out_dir / "index.parquet", pa.table(cols, schema=schema))
    with atomic_path(out_dir / "failures.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures + warnings))
    # shards of movies that failed now or left the catalogue are not part of the result
    prune(out_dir, "shots-*.tar", {r["shard"] for r in records if r["status"] == "ok"})
    prune(parts_dir, "*.json", {part_name(m.movie_id) for m in catalogue})  # titles that left the catalogue
    if exclusive:  # with several processes another one may still be writing a temp file
        remove_stale_tmp(out_dir)

    ok = len(records) - len(failures)
    counts = {"movies": len(records), "ok": ok, "failed": len(failures),
              "shots": len(cols["shot"]), "frames": sum(r.get("num_frames", 0) for r in records)}
    write_done(out_dir, STAGE, chash, input_hash, counts, started,
               decode_seconds=round(sum(r["elapsed_s"] for r in records), 3))
    msg = (f"detect-shots: {counts['movies']} movies, {ok} ok, {len(failures)} failed, "
           f"{counts['shots']} shots → {out_dir}")
    if failures:
        msg += f" (reasons in {out_dir / 'failures.jsonl'})"
    if warnings:
        msg += f"; {len(warnings)} processed with a warning (in {out_dir / 'failures.jsonl'})"
    print(msg)
    if ok == 0 or (strict and failures):
        return 1
    return 0
