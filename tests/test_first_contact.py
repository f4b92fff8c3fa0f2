"""What a new user touches first: `m2s embed` behaves like the stages (trained shot settings,
overrides, folders, catalogues, detect-shots' truncation rule), `m2s search` (paths, exclusion,
filters, JSON), clear errors instead of tracebacks, progress lines in logs, help and version."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from movies2scenes.config import ShotsConfig, ViTConfig
from movies2scenes.cli import main

from testkit.videos import write_catalogue, write_video

ROOT = Path(__file__).resolve().parents[1]
TINY = ViTConfig(arch="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny exported encoder trained (as far as its settings say) with min_shot_frames 15, 64 px."""
    from movies2scenes.export import export_scene_encoder
    from movies2scenes.models.folder import save_vit
    from movies2scenes.models.vit import create_scene_vit

    tmp = tmp_path_factory.mktemp("enc")
    torch.manual_seed(0)
    save_vit(create_scene_vit(TINY).vit, TINY, tmp / "enc", shots_per_scene=3)
    shots = dataclasses.asdict(ShotsConfig(min_shot_frames=15, keyframe_size=64))
    export_scene_encoder(tmp / "enc", tmp / "export", {"name": "test", "shots": shots})
    return tmp / "export"


def test_embed_uses_the_encoders_shot_settings_and_takes_overrides(export, bikes, tmp_path, capsys):
    out = tmp_path / "e.parquet"
    # no -c: the encoder's own settings (min_shot_frames 15) give bikes.mp4's 6 shots → 4 windows of 3
    assert main(["embed", str(bikes), "--encoder", str(export), "--out", str(out)]) == 0
    assert "4 scenes of 1/1 videos" in capsys.readouterr().out
    # an override among the videos is an override, not a failed video
    assert main(["embed", str(bikes), "shots.min_shot_frames=55", "--encoder", str(export), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "of 1/1 videos" in text and "min_shot_frames 55" in text
    assert not Path(str(out) + ".failures.jsonl").exists()
    assert len(pq.read_table(out)) < 4  # shots under 55 frames are merged: fewer windows


def test_embed_takes_folders_and_catalogues(export, bikes, tmp_path, capsys):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(bikes, folder / "a.mp4")
    shutil.copy(bikes, folder / "sub" / "b.ogv")  # an extension the catalogue used to skip
    (folder / "notes.txt").write_text("not a video")
    out = tmp_path / "e.parquet"
    capsys.readouterr()
    assert main(["embed", str(folder), "--encoder", str(export), "--out", str(out)]) == 0
    # both found (the .ogv too); a byte copy is one film: embedded once, and said (issue 42)
    assert {Path(v).name for v in pq.read_table(out)["video"].to_pylist()} == {"a.mp4"}
    assert f"{folder / 'sub' / 'b.ogv'}: the same video as {folder / 'a.mp4'}" in capsys.readouterr().err
    cat = write_catalogue(tmp_path / "cat.csv", [{"movie_id": "m1", "title": "A", "video": str(folder / "a.mp4")}])
    assert main(["embed", str(cat), "--encoder", str(export), "--out", str(out)]) == 0
    assert set(pq.read_table(out)["video"].to_pylist()) == {str(folder / "a.mp4")}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["embed", str(empty), "--encoder", str(export), "--out", str(out)]) == 2
    assert "a folder without video files" in capsys.readouterr().err


def test_embed_refuses_a_truncated_file_like_detect_shots(export, tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = [np.full((48, 64, 3), rng.integers(0, 255, 3), np.uint8) for _ in range(4) for _ in range(30)]
    full = write_video(tmp_path / "full.mkv", frames)  # Matroska: a cut file still decodes, up to the cut
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "e.parquet"
    assert main(["embed", str(full), str(cut), "--encoder", str(export), "--out", str(out)]) == 0
    failures = [json.loads(x) for x in Path(str(out) + ".failures.jsonl").read_text().splitlines()]
    assert [f["video"] for f in failures] == [str(cut)]
    assert "truncated" in failures[0]["reason"]
    assert set(pq.read_table(out)["video"].to_pylist()) == {str(full)}


@pytest.fixture(scope="module")
def two_clips(export, bikes, tmp_path_factory):
    """The same clip under two folders, a/clip.mp4 and b/clip.mp4, embedded and indexed."""
    tmp = tmp_path_factory.mktemp("search")
    for d in ("a", "b"):
        (tmp / d).mkdir()
        shutil.copy(bikes, tmp / d / "clip.mp4")
    emb = tmp / "e.parquet"
    for d in ("a", "b"):  # one call each: a call embeds a byte copy once (issue 42)
        assert main(["embed", str(tmp / d / "clip.mp4"), "--encoder", str(export), "--out", str(tmp / f"{d}.parquet")]) == 0
    pq.write_table(pa.concat_tables([pq.read_table(tmp / f"{d}.parquet") for d in ("a", "b")]), emb)
    assert main(["index", str(emb), "--out", str(tmp / "idx")]) == 0
    return tmp, emb


def _search(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["search", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_search_at_matches_the_path_and_leaves_out_the_query(two_clips, capsys):
    tmp, emb = two_clips
    idx = tmp / "idx"
    b = str(tmp / "b" / "clip.mp4")
    got = _search(capsys, idx, "--query", emb, "--at", f"{b}:5.0", "-k", "3")
    assert got["query"]["video"] == b and got["query"]["start_time"] <= 5.0 < got["query"]["end_time"]
    assert got["exclude"] == "self"
    assert all(not (h["video"] == b and h["scene"] == got["query"]["scene"]) for h in got["hits"])
    # the same scene of the other copy is the best hit (identical pixels)
    assert got["hits"][0]["video"] == str(tmp / "a" / "clip.mp4") and got["hits"][0]["scene"] == got["query"]["scene"]
    itself = _search(capsys, idx, "--query", emb, "--at", f"{b}:5.0", "--exclude", "none")
    assert (itself["hits"][0]["video"], itself["hits"][0]["scene"]) == (b, got["query"]["scene"])
    others = _search(capsys, idx, "--query", emb, "--at", f"{b}:5.0", "--exclude", "video", "-k", "10")
    assert others["hits"] and all(h["video"] != b for h in others["hits"])
    only_b = _search(capsys, idx, "--query", emb, "--at", f"{b}:5.0", "--video", "*/b/*", "-k", "10",
                     "--keep-overlapping")  # b's other windows all share shots with the query
    assert only_b["hits"] and all(h["video"] == b for h in only_b["hits"])
    # a bare name that two videos share is an error naming both, never a silent pick
    assert main(["search", str(idx), "--query", str(emb), "--at", "clip.mp4:5.0"]) == 2
    err = capsys.readouterr().err
    assert "2 videos" in err and "give the path" in err


def test_search_leaves_out_echoes_of_the_query_and_of_each_hit(two_clips, capsys):
    """Issue 30: with stride-1 windows every hit used to be a shifted copy of the query (sharing
    n − 1 shots). By default a hit shares no shot with the query (same video) nor with a better
    hit of its video; --keep-overlapping shows them all. --video matches file names too, and a
    glob that matches no indexed video is an error, not "no hits"."""
    tmp, emb = two_clips
    idx, b = tmp / "idx", str(tmp / "b" / "clip.mp4")

    def overlap(x, y):
        return x["video"] == y["video"] and x["start_shot"] < y["end_shot"] and y["start_shot"] < x["end_shot"]

    got = _search(capsys, idx, "--query", emb, "--at", f"{b}:5.0", "-k", "10")
    hits, q = got["hits"], got["query"]
    assert hits and not any(overlap(h, q) for h in hits)
    assert not any(overlap(x, y) for i, x in enumerate(hits) for y in hits[i + 1:])
    echoes = _search(capsys, idx, "--query", emb, "--at", f"{b}:5.0", "-k", "10", "--keep-overlapping")["hits"]
    assert any(overlap(h, q) for h in echoes) and len(echoes) > len(hits)  # today's main: this, by default
    by_name = _search(capsys, idx, "--query", emb, "--at", f"{b}:5.0", "--video", "clip.*", "--keep-overlapping")
    assert by_name["hits"]  # a file-name glob (today's main: matched against the full path only, no hits)
    assert main(["search", str(idx), "--query", str(emb), "--row", "0", "--video", "trailer_*"]) == 2
    assert "matches no indexed video" in capsys.readouterr().err
    assert main(["search", str(idx), "--query", str(emb), "--row", "0"]) == 0
    assert "[start, end): end exclusive" in capsys.readouterr().out


def test_simple_mistakes_are_one_line_errors(two_clips, tmp_path, capsys):
    tmp, emb = two_clips
    for args, msg in [
        (["search", str(tmp / "idx"), "--query", str(emb), "--row", "0", "-k", "0"], "-k must be >= 1"),
        (["search", str(tmp), "--query", str(emb), "--row", "0"], "not an index folder"),
        (["search", str(tmp / "nope"), "--query", str(emb), "--row", "0"], "no such index folder"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    import pyarrow as pa

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"video": ["x"], "scene": [0]}), bad)
    for args in (["index", str(bad), "--out", str(tmp_path / "i")],
                 ["search", str(tmp / "idx"), "--query", str(bad), "--row", "0"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "no embedding" in err and "m2s embed" in err


def test_help_version_and_descriptions(capsys):
    from movies2scenes import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "m2s detect-shots" in top
    from movies2scenes.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert parser.description, f"{name}: no description"
        assert "example:" in (parser.epilog or "").lower(), f"{name}: no example"


def test_progress_lines_when_not_a_terminal(tmp_path):
    """Under SLURM/nohup/CI (stderr a file) training prints plain progress lines, not nothing."""
    code = ("import time\nfrom movies2scenes.progress import progress\n"
            "bar = progress(total=5, desc='shot encoder', unit='step')\n"
            "for i in range(5):\n    bar.set_postfix({'loss': f'{3 - i * 0.1:.3f}'}); bar.update(); time.sleep(0.01)\n"
            "bar.close()\n")
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-c", code], stdout=f, stderr=f, cwd=ROOT,
                           env={**os.environ, "M2S_PROGRESS_INTERVAL": "0"})
    assert r.returncode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 5 and "\r" not in log.read_text()
    assert "shot encoder: 5/5 step (100%)" in lines[-1] and "loss=2.600" in lines[-1] and "step/s" in lines[-1]
    assert "ETA" in lines[0]
    with open(log, "w") as f:  # the default interval: a first line and a last one, not one per step
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=f, cwd=ROOT,
                       env={k: v for k, v in os.environ.items() if k != "M2S_PROGRESS_INTERVAL"})
    assert len(log.read_text().splitlines()) == 2


def test_metadata_free_catalogue_is_refused_not_done(tmp_path, capsys):
    """No genres, no synopses: 0 movie pairs used to be 'done' with NaN in summary.json."""
    rows = [{"movie_id": f"m{i}", "title": f"T{i}", "video": f"/nowhere/{i}.mp4", "split": "train"} for i in range(6)]
    cat = write_catalogue(tmp_path / "cat.csv", rows)
    run = tmp_path / "run"
    args = ["build-movie-pairs", "-c", str(ROOT / "configs" / "demo.yaml"), f"run_dir={run}", f"catalogue={cat}"]
    assert main([*args, "movie_pairs.sources=[genre,synopsis]", "movie_pairs.combined=[]"]) == 2
    err = capsys.readouterr().err
    assert "genre gave 0 movie pairs" in err and "0 of 6 train movies have genres" in err
    assert "synopsis gave 0 movie pairs" in err and "have a synopsis" in err
    assert not (run / "movie_pairs" / "DONE.json").exists()
    assert main([*args, "movie_pairs.sources=[random]", "movie_pairs.combined=[]"]) == 0  # the baseline works
    summary = (run / "movie_pairs" / "summary.json").read_text()
    assert "NaN" not in summary and json.loads(summary)["sources"]["random"]["pairs"] > 0


def test_json_files_never_hold_nan(tmp_path):
    from movies2scenes.store import write_json

    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("nan")})
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {"a": None, "b": [1.0, None], "c": None}


def test_report_pictures_are_readable(tmp_path):
    """Contact sheets are drawn 1:1 at ~1400 px (captions were ~6 px once the browser scaled a
    2,400 px sheet down); clip counts read as text; curves carry chance levels."""
    from PIL import Image

    from movies2scenes.report import contact_sheet, training_curves
    from movies2scenes.eval_report import clip_counts

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (9, 128, 228, 3), np.uint8)  # 9 shots × 2 scenes ≈ 4,200 px wide
    contact_sheet(tmp_path / "sheet.png", [(frames, frames, "movie a shots 0–8 | movie b shots 3–11")] * 3)
    w, h = Image.open(tmp_path / "sheet.png").size
    assert 1400 <= w <= 1430 and h < 3 * 80  # scaled to fit, not a 4,200 px strip shrunk by the browser
    assert clip_counts({"train": 40, "val": 8, "test": 16}) == "train 40 · val 8 · test 16"
    curves = {"shot_encoder": {"loss": [(0, 5.0), (10, 5.5)], "acc1": [(0, 0.1), (10, 0.4)],
                               "knn_top1": [(0, 0.3), (10, 0.6)]},
              "movie_encoder": {"loss": [(0, 0.7), (10, 0.5)]}}
    training_curves(tmp_path / "curves.png", curves, {"shot_encoder": {"acc1": 1 / 4097, "knn_top1": 0.125}})
    assert Image.open(tmp_path / "curves.png").size[0] > 800


def test_mining_figures_name_movies_by_title_and_genre(small_world, tmp_path):
    """Issue 30: the contact sheet showed ids only, so nobody could judge a pair."""
    from movies2scenes.catalogue import load_catalogue
    from movies2scenes.scene_pairs import movie_labels

    labels = movie_labels(small_world / "catalogue.csv")
    for m in load_catalogue(small_world / "catalogue.csv"):
        assert m.title and labels[m.movie_id] == f"{m.title} ({', '.join(m.genres)}) [{m.movie_id}]"
    assert movie_labels(tmp_path / "missing.csv") == {}


def test_every_help_example_parses_and_names_what_the_demo_makes():
    """Issue 32 (4): each command's example parses with its own parser, its key=value overrides load
    against configs/demo.yaml, every runs/demo path it names is one `make demo` writes (the evaluate
    example pointed at runs/demo/tasks, which nothing writes), and each stage's override example is
    its own (every stage showed detect-shots' shots.keyframes=3)."""
    import re
    import shlex

    from movies2scenes.cli import EXAMPLES, OVERRIDE_EXAMPLES, build_parser, parse_args
    from movies2scenes.config import load
    from movies2scenes.layout import STAGES

    root = Path(__file__).resolve().parents[1]
    made = {"runs/demo", "runs/demo/world", "runs/demo/world/catalogue.csv", "runs/demo/world/watch_logs.csv",
            *(f"runs/demo/world/tasks/{t}.csv" for t in ("place", "genre", "boundary")), "runs/demo/world/tasks",
            *(f"runs/demo/{s.folder}" for s in STAGES)}
    makefile = (root / "Makefile").read_text()
    assert "RUN    ?= runs/demo" in makefile and "WORLD  ?= $(RUN)/world" in makefile and "$(WORLD)/tasks" in makefile
    parser = build_parser()
    for name, text in EXAMPLES.items():
        for line in text.splitlines():
            words = shlex.split(line.split("   (")[0])
            assert words[0] == "m2s" and words[1] == name, line
            args = parse_args(parser, words[1:])
            overrides = [w for w in getattr(args, "overrides", []) if "=" in w]
            if name == "embed":
                overrides = [w for w in args.videos if "=" in w]
            if overrides and name not in ("embed", "demo-world"):
                load([root / "configs" / "demo.yaml"], overrides)  # a ConfigError fails the test
            for path in re.findall(r"runs/demo[\w/.-]*", line):
                assert path.rstrip("/") in made, f"{name}'s example names {path}, which make demo does not write"
            # issue 42: run verbatim, an example never writes into what make demo made
            written = [w.split("=", 1)[1] for w in words if w.startswith("run_dir=")]
            written += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]
            written += [words[2]] if name == "demo-world" else []
            assert not any(w.startswith("runs/demo") for w in written), (name, written)
    stage_help = {n: parser._subparsers._group_actions[0].choices[n].format_help() for n in OVERRIDE_EXAMPLES}
    for name, example in OVERRIDE_EXAMPLES.items():
        assert example in " ".join(stage_help[name].split()), name
        if name not in ("detect-shots",):
            assert "shots.keyframes=3" not in stage_help[name], name
        key_value = shlex.split(example)[0]
        load([root / "configs" / "demo.yaml"], [key_value] if name != "demo-world" else [])
    for name in ("search", "index", "browse", "embed", "demo-world", "summary", "demo-tasks"):
        text = parser._subparsers._group_actions[0].choices[name].format_help()
        positional = text.split("positional arguments:")[1].split("options:")[0]
        assert all(len(line.split()) > 1 for line in positional.strip().splitlines()[:1]), (name, positional)
    top = parser.format_help()
    assert "evaluate.tasks" in top


def test_embed_lists_each_video_once_and_says_what_it_did_with_short_ones(export, bikes, tmp_path, capsys):
    """Issue 42 (5, 6): embed's own help example (a folder and a catalogue listing the same file)
    embedded it twice; a video of fewer than n shots became one window of all its shots silently."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(bikes, folder / "a.mp4")
    cat = write_catalogue(tmp_path / "cat.csv", [{"movie_id": "m1", "title": "A", "video": str(folder / "a.mp4")}])
    out = tmp_path / "e.parquet"
    capsys.readouterr()
    assert main(["embed", str(folder), str(cat), "--encoder", str(export), "--out", str(out),
                 "--shots-per-scene", "9"]) == 0
    got = capsys.readouterr()
    assert set(pq.read_table(out)["video"].to_pylist()) == {str(folder / "a.mp4")}
    assert "1 scenes of 1/1 videos" in got.out and "embedded once" in got.err
    assert "1 video(s) had fewer than n = 9 shots (6–6)" in got.err
