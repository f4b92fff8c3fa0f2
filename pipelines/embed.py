"""``m2s embed``, ``m2s index``, ``m2s search``: use an exported scene encoder on any videos.

embed  VIDEO... --encoder DIR --out FILE.parquet   one row per scene window: video, scene,
       start_shot, end_shot, start_frame, end_frame, start_time, end_time, embedding. Bad videos
       are reported (``FILE.failures.jsonl``) and skipped; the others are embedded.
index  FILE.parquet... --out DIR                    faiss index (index.faiss) + rows (meta.parquet)
search DIR --query FILE.parquet (--row I | --at VIDEO:SECONDS) [-k 5]   nearest scenes
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from movies2scenes.config import ConfigError, load
from movies2scenes.store import atomic_path, read_json, write_json, write_parquet


def embed(videos: list[str], encoder_dir: str, out: str, config: list[str], overrides: list[str],
          n: int | None, stride: int, batch: int) -> int:
    import torch

    from movies2scenes.export import load_scene_encoder
    from movies2scenes.retrieval import embed_video
    from movies2scenes.video import VideoError

    cfg = load(config, overrides)
    if not (Path(encoder_dir) / "config.json").is_file():
        raise ConfigError(f"--encoder {encoder_dir}: no config.json there (run `m2s export` first)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_scene_encoder(encoder_dir, device)
    n = n or int(read_json(Path(encoder_dir) / "config.json").get("shots_per_scene", 9))
    rows, failures = [], []
    for video in tqdm(videos, desc="embed", unit="video", disable=None):
        try:
            emb, windows = embed_video(video, encoder, cfg.shots, n, stride, batch, device)
        except (VideoError, OSError) as e:
            failures.append({"video": video, "reason": str(e)})
            print(f"m2s embed: {video}: {e}", file=sys.stderr)
            continue
        for i, (e, w) in enumerate(zip(emb, windows)):
            rows.append({"video": str(video), "scene": i, "start_shot": w.start_shot, "end_shot": w.end_shot,
                         "start_frame": w.start_frame, "end_frame": w.end_frame,
                         "start_time": w.start_time, "end_time": w.end_time, "embedding": e.tolist()})
    dim = encoder.num_features
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("video", pa.string()), ("scene", pa.int32()), ("start_shot", pa.int32()), ("end_shot", pa.int32()),
        ("start_frame", pa.int64()), ("end_frame", pa.int64()), ("start_time", pa.float64()),
        ("end_time", pa.float64()), ("embedding", pa.list_(pa.float32(), dim))]))
    write_parquet(out, table)
    fail_file = Path(str(out) + ".failures.jsonl")
    if failures:
        with atomic_path(fail_file) as tmp:
            tmp.write_text("".join(json.dumps(f) + "\n" for f in failures))
    else:
        fail_file.unlink(missing_ok=True)
    print(f"m2s embed: {len(rows)} scenes of {len(videos) - len(failures)}/{len(videos)} videos (n = {n} "
          f"shots, stride {stride}) → {out}" + (f"; failures: {fail_file}" if failures else ""))
    return 0 if len(failures) < len(videos) else 1


def index(files: list[str], out: str, metric: str) -> int:
    import faiss

    from movies2scenes.retrieval import build_index

    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise ConfigError("no scenes to index")
    emb = np.asarray(table["embedding"].to_pylist(), np.float32)
    idx = build_index(emb, metric)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "index.faiss") as tmp:
        faiss.write_index(idx, str(tmp))
    write_parquet(out_dir / "meta.parquet", table.drop_columns(["embedding"]))
    write_json(out_dir / "index.json", {"metric": metric, "count": table.num_rows, "dim": emb.shape[1],
                                        "sources": [str(f) for f in files]})
    print(f"m2s index: {table.num_rows} scenes ({metric}) → {out_dir}")
    return 0


def search(index_dir: str, query: str, row: int | None, at: str | None, k: int) -> int:
    import faiss

    from movies2scenes.retrieval import search as knn

    d = Path(index_dir)
    meta = read_json(d / "index.json")
    table = pq.read_table(query).to_pylist()
    if row is None:
        if not at or ":" not in at:
            raise ConfigError("give --row I or --at VIDEO:SECONDS")
        video, t = at.rsplit(":", 1)
        try:
            t = float(t)
        except ValueError:
            raise ConfigError(f"--at {at}: {t!r} is not a time in seconds (VIDEO:SECONDS, e.g. a.mp4:754.2)") from None
        if not math.isfinite(t) or t < 0:
            raise ConfigError(f"--at {at}: the time must be a finite number of seconds >= 0")
        hits = [i for i, r in enumerate(table) if Path(r["video"]).name == Path(video).name
                and r["start_time"] <= t < r["end_time"]]
        if not hits:
            raise ConfigError(f"--at {at}: no scene of {video} in {query} covers {t} s")
        row = hits[0]
    if not 0 <= row < len(table):
        raise ConfigError(f"--row {row}: {query} has {len(table)} rows")
    q = table[row]
    scores, ids = knn(faiss.read_index(str(d / "index.faiss")), np.asarray([q["embedding"]], np.float32), k,
                      meta["metric"])
    rows = pq.read_table(d / "meta.parquet").to_pylist()
    print(f"query: {q['video']} scene {q['scene']} ({q['start_time']:.2f}–{q['end_time']:.2f} s)")
    for rank, (s, i) in enumerate(zip(scores[0], ids[0]), 1):
        r = rows[int(i)]
        print(f"{rank:3d}. {s:8.4f}  {r['video']}  scene {r['scene']}  {r['start_time']:.2f}–{r['end_time']:.2f} s "
              f"(shots {r['start_shot']}–{r['end_shot'] - 1})")
    return 0
