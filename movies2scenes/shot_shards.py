"""One movie's shots on disk: :func:`process_movie` detects its shots and writes its webdataset
shard ``shots-<ID>.tar`` (keyframes + per-shot json) and returns its part record;
:func:`shot_index` turns the records of every movie into ``index.parquet``'s table. The stage
``detect-shots`` and the benches use them."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from .catalogue import Movie, safe_name
from .shots import VideoShots, check_decoded
from .errors import OutputError
from .store import output_error, read_part, sha256_file, write_shards
from .video import VideoError


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
        video = VideoShots(movie.video, cfg)
        info = video.info
        shots_out: list[dict] = []
        key_base = safe_name(movie.movie_id)

        def samples():
            for shot in video:
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
            if len(shots_out) == 1 and total > 60 * info.fps:  # a film of one shot: a threshold on the wrong scale?
                said = f"at threshold {cfg.threshold:g}" if cfg.threshold is not None else "at its default threshold"
                warning = "; ".join(filter(None, [warning, (
                    f"no cut in {total / info.fps:.0f} s of video by the {cfg.detector} detector {said}: check "
                    f"shots.thresholds.{cfg.detector}")]))
            times = video.times(total)
            for s in shots_out:
                s["start_time"] = round(float(times[s["start_frame"]]), 6)
                s["end_time"] = round(float(times[s["end_frame"]]), 6)
            digest = sha256_file(tmp_shard)  # downstream per-movie stamps (features) use it
            size = tmp_shard.stat().st_size
            try:
                tmp_shard.replace(shard_path)
            except OSError as e:
                raise output_error(shard_path, e) from e
        finally:
            tmp_shard.unlink(missing_ok=True)
        record.update(
            status="ok", fps=info.fps, width=info.width, height=info.height, codec=info.codec,
            num_frames=total, keyframe_width=video.keyframe_size[0], keyframe_height=video.keyframe_size[1],
            shard=shard_path.name, shard_sha256=digest, shots=shots_out, decoder=video.reader.decoder,
            files={shard_path.name: [size, digest]},  # what later stages check (movies2scenes.integrity)
        )
        if video.reader.note:
            record["decoder_note"] = video.reader.note
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


def video_prints(shots_dir: Path, movie_ids) -> dict[str, str]:
    """movie id → the content fingerprint of the video the shots stage processed for it (from its
    part record; ``catalogue.video_fingerprints``), for the ids that have one."""
    out = {}
    for m in movie_ids:
        rec = read_part(Path(shots_dir) / "parts" / f"{safe_name(m)}.json")
        if rec and rec.get("status") == "ok" and rec.get("fingerprint"):
            out[m] = rec["fingerprint"]
    return out


INDEX_SCHEMA = pa.schema([
    ("movie_id", pa.string()), ("shot", pa.int32()),
    ("start_frame", pa.int64()), ("end_frame", pa.int64()), ("start_time", pa.float64()),
    ("end_time", pa.float64()), ("fps", pa.float64()), ("keyframe_frames", pa.list_(pa.int64())),
    ("transition_start", pa.int64()), ("transition_end", pa.int64()), ("shard", pa.string()),
    ("shard_sha256", pa.string()), ("key", pa.string()),
])


def shot_index(records: list[dict]) -> tuple[pa.Table, list[dict], list[dict]]:
    """index.parquet's table (one row per shot of every ok movie), the failed movies, and the movies
    processed with a warning (e.g. fewer frames than declared)."""
    cols = {name: [] for name in INDEX_SCHEMA.names}
    failures, warnings = [], []
    for rec in records:
        if rec["status"] != "ok":
            failures.append({"movie_id": rec["movie_id"], "video": rec["video"], "reason": rec["reason"]})
            continue
        if rec.get("warning"):
            warnings.append({"movie_id": rec["movie_id"], "video": rec["video"], "status": "warning",
                             "reason": rec["warning"]})
        key_base = safe_name(rec["movie_id"])
        for s in rec["shots"]:
            span = s.get("transition_in") or [-1, -1]
            row = {"movie_id": rec["movie_id"], "shot": s["shot"], "start_frame": s["start_frame"],
                   "end_frame": s["end_frame"], "start_time": s["start_time"],
                   "end_time": s["end_time"], "fps": s["fps"],
                   "keyframe_frames": s["keyframe_frames"], "transition_start": span[0], "transition_end": span[1],
                   "shard": rec["shard"], "shard_sha256": rec["shard_sha256"], "key": f"{key_base}_{s['shot']:06d}"}
            for name in cols:
                cols[name].append(row[name])
    return pa.table(cols, schema=INDEX_SCHEMA), failures, warnings
