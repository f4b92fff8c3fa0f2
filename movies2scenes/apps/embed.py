"""``m2s embed``, ``m2s index``, ``m2s search``: use an exported scene encoder on any videos.

embed  VIDEO... --encoder DIR --out FILE.parquet   one row per scene window: video, scene,
       start_shot, end_shot, start_frame, end_frame, start_time, end_time, embedding. Bad videos
       are reported (``FILE.failures.jsonl``) and skipped; the others are embedded.
index  FILE.parquet... --out DIR [--add]            faiss index (index.faiss) + rows (meta.parquet);
       --add: the files' scenes added to an existing index (no rebuild)
search DIR --query FILE.parquet (--row I | --at VIDEO:SECONDS) [-k 5]   nearest scenes
search RUN_DIR --movie ID [--start SHOT] [-k 5]   nearest scenes of a run, from the scene index
       m2s browse keeps in it (browse_index/; built there if missing)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from movies2scenes.config import load
from movies2scenes.errors import ConfigError
from movies2scenes.integrity import difference, file_record
from movies2scenes.progress import progress
from movies2scenes.store import atomic_path, check_output, read_json, write_json, write_parquet


def expand_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    """(videos, overrides) from ``m2s embed``'s positional arguments: a folder gives its video files
    (recursively, by extension), a catalogue (.csv/.jsonl) its movies' videos, ``key=value`` that is
    not an existing path is a config override, anything else is a video (a missing one fails alone)."""
    from movies2scenes.catalogue import VIDEO_EXTENSIONS, load_catalogue

    videos, overrides = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise ConfigError(f"{item}: a folder without video files ({', '.join(VIDEO_EXTENSIONS)})")
            videos += found
        elif path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
            videos += [str(m.video) for m in load_catalogue(path)]
        elif "=" in item and not path.exists():
            overrides.append(item)
        else:
            videos.append(item)
    if not videos:
        raise ConfigError("no videos given (VIDEO files, folders of videos, or a catalogue .csv/.jsonl)")
    return unique_videos(videos), overrides


def unique_videos(videos: list[str]) -> list[str]:
    """``videos`` with each file once: by resolved path, then by content fingerprint (size + first
    and last 64 KiB, as ``m2s catalogue --check``: a link or a byte copy is the same film); the
    first mention is kept and the others are said on stderr. Missing files stay (they fail alone)."""
    from movies2scenes.store import file_fingerprint

    kept, seen, dropped = [], {}, []
    for video in videos:
        try:
            keys = [str(Path(video).resolve()), file_fingerprint(video)]
        except (OSError, ValueError):
            keys = [str(Path(video).resolve())]
        first = next((seen[k] for k in keys if k in seen), None)
        if first is not None:
            dropped.append((video, first))
            continue
        for k in keys:
            seen[k] = video
        kept.append(video)
    for video, first in dropped[:10]:
        print(f"m2s embed: {video}: the same video as {first} (listed twice, by a folder and a catalogue, a "
              "link or a copy): embedded once", file=sys.stderr)
    if len(dropped) > 10:
        print(f"m2s embed: ... and {len(dropped) - 10} more listed twice", file=sys.stderr)
    return kept


def is_embeddings(path: Path) -> bool:
    """A Parquet file with the columns ``m2s embed`` writes."""
    try:
        return path.is_file() and {"video", "scene", "embedding"} <= set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):
        return False


def is_index(path: Path) -> bool:
    """A folder ``m2s index`` wrote (its index.json names a metric), or an empty folder."""
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        return read_json(path / "index.json").get("metric") in ("cosine", "l2")
    except (OSError, ValueError, AttributeError):
        return False


def embed(videos: list[str], encoder_dir: str, out: str, config: list[str], overrides: list[str],
          n: int | None, stride: int, batch: int, force: bool = False, alone: bool = False) -> int:
    """Shot settings: the encoder's own (``movies2scenes.json``: what detect-shots used in training),
    then ``-c`` files, then ``key=value`` overrides."""
    import torch

    from movies2scenes.export import load_export, scene_settings
    from movies2scenes.retrieval import embed_video
    from movies2scenes.video import VideoError

    videos, more = expand_inputs(videos)
    check_output(out, [*videos, encoder_dir], is_embeddings, "a Parquet file of `m2s embed`", force)
    settings = scene_settings(encoder_dir)  # a missing, damaged or out-of-range folder is a clear error
    trained_shots = settings.get("shots") or {}
    cfg = load(config, list(overrides) + more, base={"shots": trained_shots} if trained_shots else None,
               base_source=f"{Path(encoder_dir) / 'movies2scenes.json'}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_export(encoder_dir, device)  # an export's recorded files, or refused naming the file
    encoder.alone = alone  # a factorised head trained in context reads each scene in its movie unless --alone
    n = n or int(settings["shots_per_scene"])
    rows, failures, short = [], [], []
    for video in progress(videos, desc="embed", unit="video"):
        try:
            emb, windows = embed_video(video, encoder, cfg.shots, n, stride, batch, device)
            bad = np.flatnonzero(~np.isfinite(np.asarray(emb, np.float32)).all(axis=1)) if len(emb) else []
            if len(bad):  # a silent wrong answer otherwise: NaN rows poison every index they enter
                raise VideoError(f"non-finite embedding(s) for {len(bad)} of {len(emb)} scene(s) (scene "
                                 f"{', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}): the encoder "
                                 f"{encoder_dir} gives NaN/inf (damaged or diverged weights?)")
        except (VideoError, OSError) as e:
            failures.append({"video": video, "reason": str(e)})
            print(f"m2s embed: {video}: {e}", file=sys.stderr)
            continue
        if len(windows) == 1 and windows[0].end_shot - windows[0].start_shot < n:
            short.append(windows[0].end_shot - windows[0].start_shot)
        for i, (e, w) in enumerate(zip(emb, windows)):
            rows.append({"video": str(video), "scene": i, "start_shot": w.start_shot, "end_shot": w.end_shot,
                         "start_frame": w.start_frame, "end_frame": w.end_frame,
                         "start_time": w.start_time, "end_time": w.end_time, "embedding": e.tolist()})
    dim = encoder.num_features
    from movies2scenes.apps.catalogue_embed import scene_schema

    table = pa.Table.from_pylist(rows, schema=scene_schema(dim))
    write_parquet(out, table)
    fail_file = Path(str(out) + ".failures.jsonl")
    if failures:
        with atomic_path(fail_file) as tmp:
            tmp.write_text("".join(json.dumps(f) + "\n" for f in failures))
    else:
        fail_file.unlink(missing_ok=True)
    context = f", each in a {encoder.context}-shot context" if getattr(encoder, "context", 0) else ""
    print(f"m2s embed: {len(rows)} scenes of {len(videos) - len(failures)}/{len(videos)} videos (n = {n} "
          f"shots, stride {stride}{context}; {cfg.shots.detector} detector, min_shot_frames {cfg.shots.min_shot_frames}, "
          f"{cfg.shots.keyframes} keyframe(s)) → {out}" + (f"; failures: {fail_file}" if failures else ""))
    if short:
        print(f"m2s embed: {len(short)} video(s) had fewer than n = {n} shots ({min(short)}–{max(short)}): each is "
              f"one scene of all its shots (k < n; the encoder takes any k)", file=sys.stderr)
    return 0 if len(failures) < len(videos) else 1


def embed_catalogue(args) -> int:
    """``m2s embed --catalogue``: :class:`movies2scenes.apps.catalogue_embed.EmbedCatalogue` with the
    encoder's shot settings under ``-c`` files and ``key=value`` overrides."""
    from movies2scenes.apps.catalogue_embed import EmbedCatalogue
    from movies2scenes.export import scene_settings

    overrides = [v for v in args.videos if "=" in v and not Path(v).exists()]
    if len(overrides) != len(args.videos):
        raise ConfigError("with --catalogue, the videos come from the catalogue: give only key=value overrides")
    trained_shots = scene_settings(args.encoder).get("shots") or {}
    cfg = load(args.config, overrides, base={"shots": trained_shots} if trained_shots else None,
               base_source=f"{Path(args.encoder) / 'movies2scenes.json'}")
    cfg.catalogue = args.catalogue
    cfg.executor.kind = args.executor or cfg.executor.kind
    cfg.executor.address = args.ray_address or cfg.executor.address
    return EmbedCatalogue(cfg, args.encoder, args.out, args.shots_per_scene, args.stride, args.batch, args.shots,
                          args.force, args.shard, args.alone).run()


def _read_embeddings(path: str, columns: list[str] | None = None) -> pa.Table:
    """A parquet of ``m2s embed`` rows, or a ConfigError saying what is wrong with it."""
    try:
        table = pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    need = {"video", "scene", "start_time", "end_time", "embedding"}
    missing = sorted(need - set(table.column_names))
    if missing:
        raise ConfigError(f"{path}: no {', '.join(missing)} column(s); expected the output of `m2s embed` "
                          f"(columns {', '.join(sorted(need))}, ...)")
    return table


def index(files: list[str], out: str, metric: str, force: bool = False, kind: str = "auto",
          flat_max: int | None = None, add: bool = False) -> int:
    """An index folder over ``files``: exact (flat) up to ``flat_max`` scenes, else compressed
    (``kind``: auto | flat | ivfpq | ivfpqr | ivfsq8 | hnsw; retrieval.index_plan), with its recall@10
    against exact search measured at build time and recorded in index.json. ``add``: add the files
    not yet in the index at ``out`` to it (:func:`add_to_index`) instead of building one."""
    from movies2scenes.retrieval import FLAT_MAX, build_search_index

    if add:
        return add_to_index(files, out)
    check_output(out, files, is_index, "an index folder of `m2s index`", force)
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"{out} is a file; --out names the folder the index is written to")
    files = expand_index_inputs(files)
    table, emb = read_index_inputs(files)
    idx, built = build_search_index(emb, metric, kind, flat_max=FLAT_MAX if flat_max is None else flat_max)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metric": metric, "count": table.num_rows, "dim": emb.shape[1], "sources": [str(f) for f in files],
              **built}
    write_index_generation(out_dir, idx, table.drop_columns(["embedding"]), record, generation=0)
    recall = (f"; recall@10 against exact search {built['recall_at_10']:.3f} on {built['recall_queries']} "
              "indexed scenes as queries" if "recall_at_10" in built else "; exact search")
    print(f"m2s index: {table.num_rows} scenes ({metric}, {built['kind']}: {built['factory']}, "
          f"{(out_dir / INDEX_FILES[0]).stat().st_size / 2**20:.1f} MB){recall} → {out_dir}")
    return 0


def expand_index_inputs(files: list[str]) -> list[str]:
    """Files as given, a folder of ``m2s embed --catalogue`` as its per-movie files."""
    if any(Path(f).is_dir() for f in files):
        from movies2scenes.apps.catalogue_embed import catalogue_files

        files = [str(p) for f in files for p in (catalogue_files(Path(f)) if Path(f).is_dir() else [Path(f)])]
    return files


def read_index_inputs(files: list[str]) -> tuple[pa.Table, np.ndarray]:
    """The rows of ``m2s embed`` files and their (N, d) embeddings: one encoder's (one width), every
    embedding finite (else a ConfigError naming file and row), at least one row."""
    tables = [_read_embeddings(f) for f in files]
    dims = {f: t.schema.field("embedding").type for f, t in zip(files, tables)}
    if len(set(map(str, dims.values()))) > 1:
        raise ConfigError("embeddings of different encoders cannot share an index: "
                          + ", ".join(f"{f}: {d}" for f, d in dims.items()))
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise ConfigError("no scenes to index")
    emb = np.asarray(table["embedding"].to_pylist(), np.float32)
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        starts = np.cumsum([0] + [t.num_rows for t in tables])
        where = [f"{files[int(np.searchsorted(starts, i, 'right')) - 1]} row "
                 f"{int(i - starts[int(np.searchsorted(starts, i, 'right')) - 1])}" for i in bad[:5]]
        raise ConfigError(f"{len(bad)} embedding(s) are not finite (NaN/inf): {', '.join(where)}"
                          f"{' ...' if len(bad) > 5 else ''}; nothing was indexed")
    return table, emb


def index_file_names(generation: int) -> tuple[str, str]:
    """(faiss file, rows file) of an index generation: the build's are index.faiss / meta.parquet,
    each ``--add`` writes index-G.faiss / meta-G.parquet and then points index.json at them."""
    return INDEX_FILES if generation == 0 else (f"index-{generation}.faiss", f"meta-{generation}.parquet")


def write_index_generation(d: Path, index, rows: pa.Table, record: dict, generation: int) -> None:
    """Write an index generation's files, then index.json naming them (the commit: a run killed
    before it leaves the previous generation in force), then delete every other generation's files."""
    import faiss

    names = index_file_names(generation)
    with atomic_path(d / names[0]) as tmp:
        faiss.write_index(index, str(tmp))
    write_parquet(d / names[1], rows)
    write_json(d / "index.json", record | {"generation": generation, "index_file": names[0], "meta_file": names[1],
                                           "files": {n: file_record(d / n) for n in names}})
    for stale in [*d.glob("index*.faiss"), *d.glob("meta*.parquet")]:
        if stale.name not in names:
            stale.unlink(missing_ok=True)


def add_to_index(files: list[str], out: str) -> int:
    """``m2s index FILES --out DIR --add``: the files' scenes added to the index at DIR — encoded
    with its trained quantisers (no retraining, no rebuild), a new generation of its files; the
    recall@10 against exact search is measured again on the added scenes as queries (over every
    source, which must still be readable); files already in it are skipped, so a run killed part way
    and run again ends with the same index."""
    from movies2scenes.retrieval import build_index, measured_recall, stored_vectors

    d = Path(out)
    meta = read_index_record(d)
    index, _ = read_index_files(d, meta, mmap=False)
    files = expand_index_inputs(files)
    known = {_resolved(s) for s in meta.get("sources") or []}
    new = [f for f in dict.fromkeys(files) if _resolved(f) not in known]
    if not new:
        print(f"m2s index --add: every file is already in the index at {d}; nothing to add")
        return 0
    table, emb = read_index_inputs(new)
    if emb.shape[1] != meta["dim"]:
        raise ConfigError(f"{new[0]}: {emb.shape[1]}-d embeddings, but the index at {d} holds {meta['dim']}-d ones "
                          "(another encoder)")
    x = stored_vectors(emb, meta["metric"])
    index.add(x)
    names = index_file_names(int(meta.get("generation", 0)))
    rows = pa.concat_tables([pq.read_table(d / names[1]), table.drop_columns(["embedding"])], promote_options="default")
    sources = [*meta["sources"], *map(str, new)]
    record = {k: v for k, v in meta.items() if k not in ("files", "generation", "index_file", "meta_file")}
    record |= {"count": index.ntotal, "sources": sources,
               "added": [*meta.get("added", []), {"files": len(new), "scenes": len(emb)}]}
    if meta.get("kind", "flat") != "flat":
        try:
            _, indexed = read_index_inputs(meta["sources"])  # the added files are read once, above
        except ConfigError as e:
            record |= {"recall_at_10": None, "recall_note": f"not measured after --add: {e}"}
            print(f"m2s index --add: recall not measured ({e})", file=sys.stderr)
        else:
            picked = np.random.default_rng(0).choice(len(emb), min(len(emb), 200), replace=False)
            recall = measured_recall(index, build_index(np.vstack([indexed, emb]), meta["metric"]), x[picked])
            record |= {"recall_at_10": recall, "recall_queries": len(picked), "recall_on": "added scenes"}
    write_index_generation(d, index, rows, record, int(meta.get("generation", 0)) + 1)
    said = (f"; recall@10 {record['recall_at_10']:.3f} on {record['recall_queries']} added scenes as queries"
            if record.get("recall_at_10") is not None else "")
    print(f"m2s index --add: {len(emb)} scenes of {len(new)} file(s) added → {index.ntotal} scenes in {d}{said}")
    return 0


def _resolved(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


INDEX_FILES = ("index.faiss", "meta.parquet")


def read_index_record(d: Path) -> dict:
    """``index.json`` of an index folder, checked: metric, count, dim (and the files' record)."""
    try:
        meta = json.loads((d / "index.json").read_text(encoding="utf-8"))
        ok = (isinstance(meta, dict) and meta.get("metric") in ("cosine", "l2")
              and all(isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool) and meta[k] > 0
                      for k in ("count", "dim")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise ConfigError(f"{d / 'index.json'}: not the record `m2s index` writes (metric cosine or l2, count and "
                          f"dim > 0); rebuild the index: m2s index FILE.parquet --out {d} --force")
    return meta


def read_index_files(d: Path, meta: dict, mmap: bool = True):
    """The faiss index and the rows of the generation ``index.json`` names, checked against it: the
    files are the ones `m2s index` wrote (size and sha256, where recorded), readable, and of its
    count; a compressed index gets its recorded search parameters (nprobe, efSearch, k_factor_rf).
    ``mmap``: the index's bulk (codes, inverted lists) memory-mapped from the file where faiss can
    (flat, HNSW and re-ranked codes: IO_FLAG_MMAP_IFC; IVF lists: IO_FLAG_MMAP) — not in RAM."""
    import faiss

    from movies2scenes.retrieval import SEARCH_PARAMS, set_search_params

    rebuild = f"rebuild the index: m2s index FILE.parquet --out {d} --force"
    generation = meta.get("generation", 0)
    if not (isinstance(generation, int) and not isinstance(generation, bool) and generation >= 0
            and (meta.get("index_file"), meta.get("meta_file")) in ((None, None), index_file_names(generation))):
        raise ConfigError(f"{d / 'index.json'}: generation / index_file / meta_file are not what `m2s index` writes; "
                          f"{rebuild}")
    index_name, meta_name = index_file_names(generation)
    for name, record in (meta.get("files") or {}).items():
        if name in (index_name, meta_name) and (why := difference(d / name, record, content=True)):
            raise ConfigError(f"{d / name} {why}: not the file `m2s index` wrote; {rebuild}")
    flag = 0
    if mmap:
        flag = faiss.IO_FLAG_MMAP if meta.get("kind") in ("ivfpq", "ivfsq8") else faiss.IO_FLAG_MMAP_IFC
    try:
        index = faiss.read_index(str(d / index_name), flag | faiss.IO_FLAG_READ_ONLY if flag else 0)
    except RuntimeError as e:
        raise ConfigError(f"{d / index_name}: not a readable faiss index ({str(e).splitlines()[0]}); {rebuild}") from None
    try:
        rows = pq.read_table(d / meta_name).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"{d / meta_name}: not readable ({e}); {rebuild}") from None
    if not (index.ntotal == len(rows) == meta["count"] and index.d == meta["dim"]):
        raise ConfigError(f"{d}: {index_name} holds {index.ntotal} × {index.d}, {meta_name} {len(rows)} rows, "
                          f"index.json says {meta['count']} × {meta['dim']}; {rebuild}")
    params = meta.get("params") or {}
    if not (isinstance(params, dict) and all(k in SEARCH_PARAMS and isinstance(v, int) and not isinstance(v, bool)
                                             and 0 < v <= 1 << 16 for k, v in params.items())):
        raise ConfigError(f"{d / 'index.json'}: params must be {' / '.join(SEARCH_PARAMS)} counts, got {params!r}; "
                          f"{rebuild}")
    set_search_params(index, params)
    return index, rows


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def find_scene(table: list[dict], video: str, t: float, query: str) -> int:
    """The row of ``video`` whose [start_time, end_time) covers ``t``. ``video`` is matched as a
    path (exactly, or the same file once resolved); a bare file name is accepted only when it
    names one video of the file — two videos of that name are an error listing both."""
    names = sorted({r["video"] for r in table})
    same = [v for v in names if v == video] or [v for v in names if _same_file(v, video)]
    if not same and Path(video).name == video:  # a bare name: only if unambiguous
        same = [v for v in names if Path(v).name == video]
        if len(same) > 1:
            raise ConfigError(f"--at {video}:{t}: {len(same)} videos in {query} are called {video} ("
                              + ", ".join(same[:5]) + "); give the path")
    if not same:
        raise ConfigError(f"--at {video}:{t}: {query} has no scenes of {video}"
                          + (f" (videos: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""))
    hits = [i for i, r in enumerate(table) if r["video"] == same[0] and r["start_time"] <= t < r["end_time"]]
    if not hits:
        last = max(r["end_time"] for r in table if r["video"] == same[0])
        raise ConfigError(f"--at {video}:{t}: no scene of {same[0]} covers {t} s (its scenes end at {last:.2f} s)")
    return hits[0]


def video_matches(video: str, globs) -> bool:
    """``video`` matches one of ``globs`` (fnmatch) as a path or by its file name."""
    from fnmatch import fnmatch

    return any(fnmatch(video, g) or fnmatch(Path(video).name, g) for g in globs)


def search_run(run_dir: str, movie: str, start: int, k: int, as_json: bool = False) -> int:
    """Nearest scenes in a run to the scene of ``movie`` starting at shot ``start``, from the scene
    index ``m2s browse`` keeps in the run (``browse_index/``: read back, the missing movies embedded
    and kept) — the same search as browse's: other movies only, no window overlapping a better hit."""
    from movies2scenes.apps.browse.app import NotFound, RunView

    view = RunView(run_dir)
    if view.encoder is None:
        raise ConfigError(f"{run_dir}: no finished export (export/DONE.json): run export first")
    try:
        q, end = view.scene_embedding(movie, start)
    except NotFound as e:
        raise ConfigError(e.args[0]) from None
    hits = view.search(q, k, movie)
    rows = [{"movie_id": h["movie"], "title": h["title"], "split": h["split"], "start_shot": h["start"],
             "end_shot": h["end"], "start_time": h["t0"], "end_time": h["t1"], "score": h["score"]} for h in hits]
    query = {"movie_id": movie, "start_shot": start, "end_shot": end}
    if as_json:
        print(json.dumps({"query": query, "hits": rows}))
        return 0
    print(f"query: {movie} shots [{start}, {end}) — {len(view.windows)} scenes of {view.n} shots indexed "
          f"({view.index_cached} of {view.index_total} movies read back from browse_index/)")
    for i, r in enumerate(rows, 1):
        print(f"{i:>3}. {r['score']:.3f}  {r['movie_id']}  shots [{r['start_shot']}, {r['end_shot']})  "
              f"{r['start_time']:.1f}–{r['end_time']:.1f} s  {r['title']}")
    return 0


def search(index_dir: str, query: str, row: int | None, at: str | None, k: int, exclude: str = "self",
           videos: list[str] = (), as_json: bool = False, echoes: bool = False) -> int:
    """Nearest indexed scenes to one query scene. ``exclude``: none, self (the query scene itself
    and the windows that share a shot with it) or video (every scene of the query's video).
    ``videos``: keep only hits whose video matches one of these globs (path or file name). Unless
    ``echoes``, a hit that shares a shot with a better hit of its video is left out
    (:class:`retrieval.Echoes`)."""
    from movies2scenes.retrieval import Echoes
    from movies2scenes.retrieval import search as knn

    if row is None:  # the arguments first, then the files
        if not at or ":" not in at:
            raise ConfigError("give --row I or --at VIDEO:SECONDS")
        video, t = at.rsplit(":", 1)
        try:
            t = float(t)
        except ValueError:
            raise ConfigError(f"--at {at}: {t!r} is not a time in seconds (VIDEO:SECONDS, e.g. a.mp4:754.2)") from None
        if not math.isfinite(t) or t < 0:
            raise ConfigError(f"--at {at}: the time must be a finite number of seconds >= 0")
    d = Path(index_dir)
    if d.is_file():  # an embeddings file given where the index folder goes: never suggest --out onto it
        raise ConfigError(f"{d}: a file, not an index folder; search takes the folder `m2s index` writes: "
                          f"m2s index {d} --out {d.with_suffix('')}.index, then m2s search {d.with_suffix('')}.index "
                          f"--query {d} ...")
    if not d.is_dir():
        raise ConfigError(f"{d}: no such index folder (make one with `m2s index FILE.parquet --out {d}`)")
    if not (d / "index.json").is_file():
        raise ConfigError(f"{d}: not an index folder (no index.json); make one with `m2s index FILE.parquet --out {d}`")
    meta = read_index_record(d)
    table = _read_embeddings(query).to_pylist()
    if row is None:
        row = find_scene(table, video, t, query)
    if not 0 <= row < len(table):
        raise ConfigError(f"--row {row}: {query} has {len(table)} rows")
    q = table[row]
    if not np.isfinite(np.asarray(q["embedding"], np.float32)).all():
        raise ConfigError(f"{query} row {row}: the query embedding is not finite (NaN/inf); no search is "
                          "possible (re-embed the video with a sound encoder)")
    if len(q["embedding"]) != meta["dim"]:
        raise ConfigError(f"{query}: {len(q['embedding'])}-d embeddings, but the index at {d} holds "
                          f"{meta['dim']}-d ones (another encoder)")
    index, rows = read_index_files(d, meta)
    if videos and not any(video_matches(v, videos) for v in {r["video"] for r in rows}):
        names = sorted({Path(r["video"]).name for r in rows})
        raise ConfigError(f"--video {' '.join(videos)}: matches no indexed video (the index at {d} holds "
                          f"{len(names)}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})")

    def same(r: dict) -> bool:
        return r["video"] == q["video"] and r["start_frame"] == q["start_frame"] and r["end_frame"] == q["end_frame"]

    fetch = min(index.ntotal, max(4 * k, k + 64))
    while True:  # filters may drop hits: fetch more until k are kept or the index is exhausted
        scores, ids = knn(index, np.asarray([q["embedding"]], np.float32), fetch, meta["metric"])
        shown = Echoes()
        if exclude == "self" and not echoes:
            shown.take(q["video"], q["start_shot"], q["end_shot"])  # the query's own shifted copies
        hits = []
        for s, i in zip(scores[0], ids[0]):
            r = rows[int(i)] if i >= 0 else None
            if r is None or (exclude == "video" and r["video"] == q["video"]) or (exclude == "self" and same(r)):
                continue
            if videos and not video_matches(r["video"], videos):
                continue
            if not echoes:
                if shown.echo(r["video"], r["start_shot"], r["end_shot"]):
                    continue
                shown.take(r["video"], r["start_shot"], r["end_shot"])
            hits.append((float(s), r))
            if len(hits) == k:
                break
        if len(hits) == k or fetch >= index.ntotal:
            break
        fetch = min(index.ntotal, fetch * 4)
    fields = ("video", "scene", "start_shot", "end_shot", "start_frame", "end_frame", "start_time", "end_time")
    if as_json:
        print(json.dumps({"query": {f: q[f] for f in fields if f in q}, "metric": meta["metric"], "exclude": exclude,
                          "hits": [{"rank": i, "score": s, **{f: r[f] for f in fields if f in r}}
                                   for i, (s, r) in enumerate(hits, 1)]}))
        return 0
    left_out = {"none": "nothing", "self": "the query scene", "video": "the query's video"}[exclude]
    if not echoes and exclude != "video":
        left_out += " and windows sharing a shot with a better hit" + (" or the query" if exclude == "self" else "")
    print(f"query: {q['video']} scene {q['scene']} ({q['start_time']:.2f}–{q['end_time']:.2f} s, shots "
          f"[{q['start_shot']}, {q['end_shot']})); {meta['metric']} similarity; left out: {left_out}")
    if not hits:
        print("no hits (every indexed scene was excluded or filtered out)")
    for rank, (s, r) in enumerate(hits, 1):
        print(f"{rank:3d}. {s:8.4f}  {r['video']}  scene {r['scene']}  {r['start_time']:.2f}–{r['end_time']:.2f} s "
              f"(shots [{r['start_shot']}, {r['end_shot']}))")
    print("shot ranges are [start, end): end exclusive, as end_shot in --json and the Parquet files")
    return 0
