"""``m2s``: one subcommand per stage, plus the demo world and catalogue helpers.

Every stage subcommand takes ``-c/--config FILE`` (repeatable, merged in order) and trailing
``key=value`` overrides, e.g. ``m2s detect-shots -c configs/demo.yaml run_dir=runs/x shots.keyframes=3``.
"""

from __future__ import annotations

import argparse
import sys

from movies2scenes.config import load
from movies2scenes.errors import EXIT_STATUS, ConfigError
from movies2scenes.pipeline import PIPELINE, STAGE_SPECS, StageSpec

# `m2s index` / `m2s browse --index`: retrieval.INDEX_KINDS, spelt here so that --help imports no torch
INDEX_CHOICES = ["auto", "flat", "ivfpq", "ivfpqr", "ivfsq8", "hnsw"]


def _add_config_args(p: argparse.ArgumentParser, example: str = "") -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config file (repeatable; later files override earlier ones)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides (YAML values; quote one with spaces), e.g. run_dir=runs/x "
                        + (example or "seed=1"))


def _add_parallel_args(p: argparse.ArgumentParser, strict: bool = True) -> None:
    p.add_argument("--shard", metavar="i/n", default=None,
                   help="process only movies with index %% n == i (job arrays); under "
                        "`accelerate launch` the process index is used instead")
    if strict:
        p.add_argument("--strict", action="store_true",
                       help="exit non-zero if any movie failed (default: only if all failed)")
    p.add_argument("--force", action="store_true", help="redo everything, ignoring DONE.json and parts")
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="where the items run: local (this process, --shard, accelerate ranks) or ray (one task "
                        "per item on a Ray cluster, longest first; the [ray] extra); default: executor.kind")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="with --executor ray: the cluster (a `ray start --head` address, ray://host:10001); "
                        "default: executor.address, then $RAY_ADDRESS, else a local cluster of this machine")


DESCRIPTION = """\
Movies2Scenes: pretrain a scene encoder for long-form video from movie metadata.
Each stage reads the previous stages' folders under run_dir and writes its own; a stage that is
up to date does nothing, a killed one resumes. Stages take -c FILE (repeatable) and key=value
overrides."""

EPILOG = """\
pipeline (in order):
  m2s detect-shots -c configs/demo.yaml run_dir=runs/x catalogue=movies.csv
  m2s train-shot-encoder, extract-shot-features, build-movie-pairs, train-movie-encoder,
      mine-scene-pairs, train-scene-encoder, export   (same arguments)
  m2s evaluate ... 'evaluate.tasks=[place.csv, genre.csv]'   (the same, plus task CSVs: m2s demo-tasks)
use an exported encoder:
  m2s embed videos/ --encoder runs/x/export --out scenes.parquet
  m2s index scenes.parquet --out idx && m2s search idx --query scenes.parquet --at videos/a.mp4:75
exit status: 0 done, 1 failures that matter, 2 bad config/input/lock, 3 non-finite loss,
4 an output could not be written, 130 interrupted (rerun to resume).
docs: README.md and docs/architecture.md"""

# each command's own override in its help (the stage's section, a value its schema takes), and an
# example of each command; the stages' come from their declaration (movies2scenes.pipeline)
OVERRIDE_EXAMPLES = {"demo-world": "demo_world.num_movies=16"} | {c: s.override for c, s in STAGE_SPECS.items()}
EXAMPLES = {
    "demo-world": "m2s demo-world runs/try/world -c configs/demo.yaml num_movies=16",
    "catalogue": "m2s catalogue --videos /data/films --out movies.csv\n  m2s catalogue --check movies.csv --logs watch_logs.csv",
    "embed": "m2s embed videos/ movies.csv clip.mp4 --encoder runs/demo/export --out scenes.parquet shots.detector=adaptive",
    "index": "m2s index scenes.parquet more.parquet --out idx --metric cosine",
    "search": "m2s search idx --query scenes.parquet --at videos/a.mp4:754.2 -k 10 --exclude video --json\n"
              "  m2s search runs/demo --movie m0003 --start 12 -k 5   (a run: the scene index m2s browse keeps)",
    "demo-tasks": "m2s demo-tasks runs/demo/world --out runs/try/tasks",
    "summary": "m2s summary runs/demo",
    "browse": "m2s browse runs/demo   (then open http://127.0.0.1:8765/)\n  m2s browse /data/run --catalogue movies.csv --host 0.0.0.0 --port 9000 --stride 3",
} | {c: s.example for c, s in STAGE_SPECS.items()}


def _add_stage(sub, spec: StageSpec) -> None:
    """The subcommand of a run-dir stage, from its declaration (:data:`movies2scenes.pipeline.PIPELINE`)."""
    p = sub.add_parser(spec.command, help=spec.help)
    _add_config_args(p, spec.override)
    if spec.per_item:
        _add_parallel_args(p, strict=spec.strict)
    else:
        p.add_argument("--force", action="store_true", help=spec.force)
    p.add_argument("--verify", action="store_true",
                   help="hash every file the stage recorded (not only their sizes) and redo the movies or units "
                        "whose files differ; what an error about a damaged file asks for")
    p.set_defaults(func=_run_stage)


def build_parser() -> argparse.ArgumentParser:
    from movies2scenes import __version__

    parser = argparse.ArgumentParser(prog="m2s", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"movies2scenes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-world", help="write the synthetic demo world (videos + metadata + truth)")
    p.add_argument("out_dir", help="folder to write (videos/, catalogue.csv, watch_logs.csv, ground_truth/)")
    _add_config_args(p, OVERRIDE_EXAMPLES["demo-world"])
    p.set_defaults(func=_demo_world)

    p = sub.add_parser("catalogue", help="build a catalogue from a folder of videos, or check one")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--videos", metavar="DIR", help="folder of video files (searched recursively)")
    g.add_argument("--check", metavar="FILE", help="validate an existing catalogue (and --logs)")
    p.add_argument("--out", metavar="FILE", help="catalogue to write (.csv or .jsonl), with --videos")
    p.add_argument("--logs", metavar="FILE", help="watch-log CSV to validate, with --check")
    p.set_defaults(func=_catalogue)

    for spec in PIPELINE:  # the run-dir stages, in pipeline order
        _add_stage(sub, spec)

    p = sub.add_parser("embed", help="scene embeddings of videos (or of a whole catalogue, per movie, on an "
                                     "executor) with an exported encoder")
    p.add_argument("videos", nargs="*", metavar="VIDEO|key=value",
                   help="video files, folders of videos, catalogue CSVs; key=value arguments are shots-config "
                        "overrides (e.g. shots.detector=adaptive)")
    p.add_argument("--encoder", required=True, metavar="DIR", help="exported encoder (run_dir/export)")
    p.add_argument("--out", required=True, metavar="FILE.parquet|DIR",
                   help="scene embeddings to write: one row per window of n shots, with times (with --catalogue: "
                        "a folder, one file per movie)")
    p.add_argument("--catalogue", metavar="CSV",
                   help="embed this catalogue per movie, resumably, on the executor (--executor ray, --shard i/n); "
                        "--out is then a folder that `m2s index` takes")
    p.add_argument("--shots", metavar="RUN/shots",
                   help="with --catalogue: reuse this detect-shots folder's keyframes for the videos it processed "
                        "with the same shot settings (no second decode)")
    p.add_argument("--executor", choices=["local", "ray"], default=None, help="with --catalogue: where movies run")
    p.add_argument("--ray-address", default=None, metavar="ADDR", help="with --catalogue --executor ray: the cluster")
    p.add_argument("--shard", default=None, metavar="i/n", help="with --catalogue: this process's share of the movies")
    p.add_argument("-n", "--shots-per-scene", type=int, default=None,
                   help="shots per scene window (default: the encoder's training n)")
    p.add_argument("--stride", type=int, default=1, help="window stride in shots (default 1)")
    p.add_argument("--batch", type=int, default=16, help="scenes per forward pass")
    p.add_argument("--alone", action="store_true",
                   help="read each scene alone, even with a factorised encoder trained to read it in its movie's "
                        "context (scene_encoder.factorised.context; its model card says which)")
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is not an earlier `m2s embed` output (never needed for one)")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config whose `shots` section sets shot detection (default: schema defaults)")
    p.set_defaults(func=_embed, overrides=[])

    p = sub.add_parser("index", help="faiss index over scene embeddings from `m2s embed`")
    p.add_argument("files", nargs="+", metavar="FILE.parquet|DIR",
                   help="scene embeddings written by `m2s embed` (files, or folders of `m2s embed --catalogue`)")
    p.add_argument("--out", required=True, metavar="DIR", help="index folder to write (index.faiss, meta.parquet, index.json)")
    p.add_argument("--metric", choices=["cosine", "l2"], default="cosine")
    p.add_argument("--index", choices=INDEX_CHOICES, default="auto",
                   dest="kind", help="auto (default): exact flat up to --flat-max scenes, ivfsq8 above; ivfpq: "
                   "IVF-PQ (16x smaller), ivfpqr: IVF-PQ re-ranked on 8-bit codes, ivfsq8: IVF with 8-bit codes "
                   "(4x smaller), hnsw: a graph (no compression); the recall@10 against exact search is measured "
                   "at build time and kept in index.json")
    p.add_argument("--flat-max", type=int, default=None, metavar="N",
                   help="auto's switch point (default 200000 scenes)")
    p.add_argument("--add", action="store_true",
                   help="add the files' scenes to the existing index at --out (its trained quantisers, no rebuild; "
                        "files already in it are skipped; recall@10 measured again on the added scenes)")
    p.add_argument("--force", action="store_true", help="replace --out even when it is not an `m2s index` folder")
    p.set_defaults(func=_index)

    p = sub.add_parser("search", help="nearest indexed scenes to a query scene")
    p.add_argument("index_dir", metavar="DIR", help="index folder written by `m2s index`; or a run directory "
                   "with --movie: the scene index m2s browse keeps in it (RUN/browse_index/)")
    p.add_argument("--query", metavar="FILE.parquet", help="embeddings holding the query scene (with an index folder)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--row", type=int, help="row of the query file")
    g.add_argument("--at", metavar="VIDEO:SECONDS", help="the scene of VIDEO that covers this time")
    p.add_argument("--movie", metavar="ID", help="with a run directory: the query scene's movie id")
    p.add_argument("--start", type=int, default=0, metavar="SHOT",
                   help="with a run directory: the query scene's first shot (default 0)")
    p.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    p.add_argument("--exclude", choices=["none", "self", "video"], default="self",
                   help="leave out the query scene and its overlapping windows (default), every scene of its video, "
                        "or nothing")
    p.add_argument("--video", action="append", default=[], metavar="GLOB",
                   help="keep only hits from videos whose path or file name matches (fnmatch, repeatable), "
                        "e.g. 'trailer_*' or '*/trailers/*'")
    p.add_argument("--keep-overlapping", action="store_true",
                   help="keep hits that share shots with a better hit of the same video (sliding windows "
                        "overlap; by default only the best of each overlapping group is shown)")
    p.add_argument("--json", action="store_true", help="print the query and hits as one JSON object")
    p.set_defaults(func=_search)

    p = sub.add_parser("demo-tasks", help="evaluation task CSVs from a demo world's ground truth")
    p.add_argument("world_dir", help="a demo world (m2s demo-world)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the task CSVs (place, genre, boundary; a film-grammar world adds "
                   "scene_type, characters and the order tasks arrow, shuffled, coverage, establishing)")
    p.set_defaults(func=_demo_tasks, overrides=[])

    p = sub.add_parser("import-shot-features", help="bring your own per-shot embeddings as the shot_features stage")
    p.add_argument("source", metavar="DIR", help="one <movie id>.npy or .parquet per movie (see docs)")
    _add_config_args(p, OVERRIDE_EXAMPLES["import-shot-features"])
    p.add_argument("--force", action="store_true", help="import again even if DONE.json matches")
    p.add_argument("--verify", action="store_true", help="import again if any imported array differs from "
                   "what was written (hashes every one)")
    p.set_defaults(func=_import_shot_features)

    p = sub.add_parser("browse", help="a read-only web app over a run directory: catalogue, shots, scene search, mined pairs")
    p.add_argument("run_dir", help="a run directory (the stages' run_dir; at least detect-shots done)")
    p.add_argument("--catalogue", metavar="CSV", help="titles, genres and splits (default: the catalogue the run was built from, as detect-shots recorded it; else RUN_DIR/world/catalogue.csv)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--stride", type=int, default=1,
                   help="index every window of n shots starting every STRIDE shots (default 1; raise it for large catalogues)")
    p.add_argument("--index", dest="kind", default="auto", choices=INDEX_CHOICES,
                   help="the scene index, as `m2s index` builds it (default auto: exact flat up to 200,000 windows, "
                        "IVF-SQ8 above, its recall@10 measured at build and shown on the search page)")
    p.set_defaults(func=_browse)

    p = sub.add_parser("summary", help="what each stage of a run directory has produced")
    p.add_argument("run_dir", help="a run directory (the stages' run_dir)")
    p.set_defaults(func=_summary)
    for name, p in sub.choices.items():  # each sub-command: its one-line description and an example
        help_line = next(a.help for a in sub._choices_actions if a.dest == name)
        p.description = help_line[0].upper() + help_line[1:] + "."
        p.epilog = "example:\n  " + EXAMPLES[name]
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser




def _read_metrics(path) -> dict:
    """A stage's metrics.json for the summary, or {} (missing or not a JSON object)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _summary(args) -> int:
    import json
    from pathlib import Path

    run = Path(args.run_dir)
    if not run.is_dir():
        print(f"m2s summary: {run} does not exist", file=sys.stderr)
        return 2
    from movies2scenes.integrity import COMMANDS, DamagedRecord, read_done
    from movies2scenes.layout import FOLDERS, RunLayout
    from movies2scenes.stages.protocol import stale_inputs

    layout = RunLayout(run)
    verdicts: list = []  # [counts, half-widths] of the evaluation against the E_shot mean, once read
    damaged: list[str] = []  # records that cannot be read: the summary exits 2 after naming them all
    stale: set[str] = set()  # stages built from an upstream record the run no longer holds (or from a stale one)
    print(f"run {run}")
    for stage in FOLDERS:
        done = layout.done(stage)
        if not done.exists():
            print(f"  {stage:<22} not done")
            continue
        try:
            rec = read_done(done)
        except (DamagedRecord, FileNotFoundError) as e:
            damaged.append(str(e))
            print(f"  {stage:<22} DAMAGED: {e}")
            continue
        counts = ", ".join(f"{k} {v}" for k, v in rec.get("counts", {}).items())
        print(f"  {stage:<22} done in {rec.get('elapsed_s', 0):.1f}s: {counts}")
        behind = stale_inputs(layout.folder(stage), rec) + sorted(set(rec.get("inputs") or {}) & stale)
        if behind:  # an upstream stage ran again since: this one holds what the old upstream made
            stale.add(stage)
            print(f"  {'':<22} STALE: built from other {', '.join(sorted(set(behind)))} than the run holds now; "
                  f"rerun `m2s {COMMANDS.get(stage, stage)}` (and the stages after it)")
        if isinstance(rec.get("heldout_auc"), (int, float)):
            start = _read_metrics(run / stage / "metrics.json").get("start") or {}
            print(f"  {'':<22} held-out ROC-AUC {rec['heldout_auc']:.3f}"
                  + (f" (its random start: {start['auc']:.3f}, chance 0.5)" if isinstance(start.get("auc"), float) else "")
                  + " (metrics.json)")
        metrics = run / stage / "metrics.json"
        if stage in ("shot_encoder", "scene_encoder") and metrics.is_file():
            m = _read_metrics(metrics)
            knn = (m.get("knn") or {}).get("history") or []
            gain = (m.get("knn") or {}).get("gain")
            if isinstance(m.get("acc1"), (int, float)):
                print(f"  {'':<22} contrastive acc1 {m['acc1']:.3f} (chance {m.get('acc1_chance', 0):.2g})"
                      + (f", kNN movie top-1 {knn[0][1]:.3f} → {knn[-1][1]:.3f} (chance {m['knn']['chance']:.3f})"
                         if len(knn) >= 1 and not isinstance(gain, dict)
                         and isinstance(m['knn'].get('chance'), (int, float)) else ""))
            if isinstance(gain, dict):
                from movies2scenes.monitor import gain_text

                print(f"  {'':<22} gain over its start: {gain_text(gain)}")
            kept = m.get("kept")
            if isinstance(kept, dict) and kept.get("rule") == "knn":
                print(f"  {'':<22} factorised: kept step {kept.get('step')} of {kept.get('last_step')} (best kNN "
                      f"top-1 {kept.get('knn_top1', float('nan')):.3f}; step 0 = the shot-feature mean)")
            elif isinstance(kept, dict) and kept.get("rule") == "order":
                print(f"  {'':<22} factorised: kept step {kept.get('step')} of {kept.get('last_step')} (best held-out "
                      f"order accuracy {kept.get('order_accuracy', float('nan')):.3f} at kNN top-1 "
                      f"{kept.get('knn_top1', float('nan')):.3f} ≥ step 0's; step 0 = the shot-feature mean, order 0.5)")
            elif isinstance(kept, dict):
                print(f"  {'':<22} factorised: kept the last step ({kept.get('step')})")
        for report in (run / stage / "report" / "index.html", run / stage / "report.html"):
            if report.is_file():
                print(f"  {'':<22} report: {report}")
        if (run / stage / "report.json").is_file():
            from movies2scenes.eval_report import task_line, verdict_counts

            try:
                report = json.loads((run / stage / "report.json").read_text(encoding="utf-8"))
                lines = [f"  {'':<22} {task}: {task_line(entry)}" for task, entry in report["tasks"].items()]
                counts, widths = verdict_counts(report)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                damaged.append(f"{run / stage / 'report.json'}: not a readable report ({type(e).__name__}); "
                               "run `m2s evaluate --force` (the same config) to write it again")
                print(f"  {'':<22} DAMAGED: {damaged[-1]}")
                continue
            print("\n".join(lines))
            if widths:
                verdicts[:] = [counts, widths]
                print(f"  {'':<22} the scene encoder against the mean of its shot features, {sum(counts.values())} "
                      f"task(s): better on {counts['better']}, tie on {counts['tie']}, worse on {counts['worse']} "
                      f"(95 % intervals by movie, half-widths {min(widths):.1f}–{max(widths):.1f} points)"
                      + (" — where it is not better, the pooled shot features serve as well or better"
                         if counts["better"] < sum(counts.values()) else ""))
        failures = run / stage / "failures.jsonl"
        if failures.is_file() and failures.stat().st_size:
            print(f"  {'':<22} failures: {failures}")
    if layout.is_done("export"):
        export = layout.folder("export")
        title = "the deliverable — the frozen scene encoder"
        if verdicts and verdicts[0]["better"] == 0:
            title = "the trained scene encoder (not better than the mean of its shot features on any task here)"
            print(f"\nthe evaluation finds the scene encoder better than the mean of its shot features on no task: "
                  f"by this run's measurements the pooled shot features ({layout.folder('shot_features')}) are "
                  f"as good a representation")
        print(f"\n{title}: {export}\n"
              f"  m2s embed VIDEO... --encoder {export} --out scenes.parquet   (then m2s index / m2s search)\n"
              f"  timm.create_model(\"local-dir:{export}\", pretrained=True)   (the single-frame backbone)\n"
              f"  movies2scenes.load_scene_encoder(\"{export}\")   (whole scenes: (B, n, k, 3, H, W) → (B, d))")
    if layout.is_done("shots"):
        print(f"\nlook at it in a browser (catalogue, shots, scene search, mined pairs):\n"
              f"  {Path(sys.executable).parent / 'm2s'} browse {run}    → http://127.0.0.1:8765/")
    if damaged:
        print(f"m2s summary: {len(damaged)} record(s) of {run} cannot be read (named above, each with the "
              "command that writes it again)", file=sys.stderr)
        return 2
    return 0


def _demo_world(args) -> int:
    from movies2scenes.config import Config
    from movies2scenes.apps import demo_world

    top = {f for f in Config.__dataclass_fields__}
    overrides = [o if o.split("=", 1)[0].split(".")[0] in top else f"demo_world.{o}" for o in args.overrides]
    cfg = load(args.config, overrides)
    return demo_world.run(cfg, args.out_dir)


def _catalogue(args) -> int:
    from movies2scenes.catalogue import catalogue_from_folder, duplicate_videos, load_catalogue, video_fingerprints
    from movies2scenes.cowatch import validate_watch_logs

    if args.videos:
        if not args.out:
            raise SystemExit("m2s catalogue: --videos needs --out FILE")
        cat = catalogue_from_folder(args.videos, args.out)
        print(f"wrote {args.out}: {len(cat)} movies")
        return 0
    cat = load_catalogue(args.check, require_videos=True)
    print(f"{args.check}: {len(cat)} movies, all videos present")
    duplicates = duplicate_videos(video_fingerprints(cat.movies))
    videos = {m.movie_id: m.video for m in cat}
    for movie_id, first in sorted(duplicates.items())[:20]:
        print(f"warning: {args.check}: movie {movie_id!r} has the same video as {first!r} "
              f"({videos[movie_id]}); detect-shots processes it once, for {first!r}, and fails "
              f"{movie_id!r}", file=sys.stderr)
    if len(duplicates) > 20:
        print(f"warning: ... and {len(duplicates) - 20} more movies sharing a video", file=sys.stderr)
    if args.logs:
        events = validate_watch_logs(args.logs, set(cat.ids()))  # out of core: any size, CSV or Parquet
        print(f"{args.logs}: {events} watch events, all valid")
    return 0


def _run_stage(args) -> int:
    """Any run-dir stage: its config, then ``movies2scenes.stages.<module>.run`` with the options it takes."""
    import importlib

    spec = STAGE_SPECS[args.command]
    stage = importlib.import_module(f"movies2scenes.stages.{spec.module}")
    cfg = load(args.config, args.overrides)
    cfg.verify = cfg.verify or args.verify
    options = {"force": args.force}
    if spec.per_item:
        options["shard"] = args.shard
        cfg.executor.kind = args.executor or cfg.executor.kind
        cfg.executor.address = args.ray_address or cfg.executor.address
        if args.ray_address and cfg.executor.kind != "ray":
            print(f"m2s {args.command}: warning: --ray-address is ignored: the items run locally "
                  "(add --executor ray, or executor.kind=ray)", file=sys.stderr)
    if spec.strict:
        options["strict"] = args.strict
    return stage.run(cfg, **options)


def _embed(args) -> int:
    from movies2scenes.apps import embed

    if args.stride < 1 or args.batch < 1 or (args.shots_per_scene is not None and args.shots_per_scene < 1):
        raise ConfigError("--stride, --batch and --shots-per-scene must be >= 1")
    if args.catalogue:
        return embed.embed_catalogue(args)
    if args.shots or args.executor or args.ray_address or args.shard:
        raise ConfigError("--shots, --executor, --ray-address and --shard go with --catalogue")
    if not args.videos:
        raise ConfigError("give videos (files, folders, catalogues) or --catalogue CSV")
    return embed.embed(args.videos, args.encoder, args.out, args.config, args.overrides,
                       args.shots_per_scene, args.stride, args.batch, args.force, args.alone)


def _import_shot_features(args) -> int:
    from movies2scenes.stages import import_shot_features

    cfg = load(args.config, args.overrides)
    cfg.verify = cfg.verify or args.verify
    return import_shot_features.run(cfg, args.source, args.force)


def _browse(args) -> int:
    from movies2scenes.apps import browse

    if args.stride < 1 or not 0 <= args.port < 65536:
        raise ConfigError("--stride must be >= 1 and --port in 0..65535")
    return browse.serve(args.run_dir, args.catalogue, args.host, args.port, args.stride, args.kind)


def _index(args) -> int:
    from movies2scenes.apps import embed

    if args.flat_max is not None and args.flat_max < 0:
        raise ConfigError(f"--flat-max must be >= 0, got {args.flat_max}")
    if args.add and (args.force or args.kind != "auto" or args.flat_max is not None):
        raise ConfigError("--add keeps the index's own kind and record: it takes no --index, --flat-max or --force")
    return embed.index(args.files, args.out, args.metric, args.force, args.kind, args.flat_max, args.add)


def _search(args) -> int:
    from movies2scenes.apps import embed

    if args.k < 1:
        raise ConfigError(f"-k must be >= 1, got {args.k}")
    from movies2scenes.layout import RunLayout

    if RunLayout(args.index_dir).is_done("shots"):  # a run directory: browse's scene index of it
        if not args.movie or args.query or args.row is not None or args.at:
            raise ConfigError(f"{args.index_dir} is a run directory: give --movie ID [--start SHOT] "
                              "(--query/--row/--at go with an index folder of `m2s index`)")
        if args.video or args.exclude != "self" or args.keep_overlapping:
            raise ConfigError(f"{args.index_dir} is a run directory: --video, --exclude and --keep-overlapping "
                              "go with an index folder of `m2s index` (a run's search leaves out the query's "
                              "movie and overlapping windows)")
        return embed.search_run(args.index_dir, args.movie, args.start, args.k, args.json)
    if not args.query or (args.row is None and not args.at):
        raise ConfigError("give --query FILE.parquet and --row I or --at VIDEO:SECONDS (with an index folder), "
                          "or a run directory with --movie ID")
    return embed.search(args.index_dir, args.query, args.row, args.at, args.k, args.exclude, args.video, args.json,
                        echoes=args.keep_overlapping)


def _demo_tasks(args) -> int:
    from movies2scenes.demo import write_demo_tasks

    for path in write_demo_tasks(args.world_dir, args.out):
        print(f"wrote {path}")
    return 0


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, with key=value overrides also after options (`m2s demo-world OUT -c f.yaml seed=1`)."""
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: one line; checkpoints, finished movies and parts are kept
        print(f"\nm2s {args.command}: interrupted; finished work and the last checkpoint are kept — "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    except tuple(error for error, _, _ in EXIT_STATUS) as e:  # errors.py's table: bad input 2, cannot write 4, …
        status, after = next((status, after) for error, status, after in EXIT_STATUS if isinstance(e, error))
        print(f"m2s {args.command}: error: {e}{after}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
