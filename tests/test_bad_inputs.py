"""Bad inputs of every stage, in one place, as a user meets them: through the ``m2s`` command.

Here: each stage run before its input exists, or on a half-written input (files present, no
DONE.json), is refused with exit code 2 and a message naming the missing file and what to run —
never a traceback, never a half-written input taken for done.

Row-level bad inputs (one bad item among good ones: reported by file/row and reason, the others
still processed) are tested next to each stage:

| stage | bad input | behaviour | test |
|---|---|---|---|
| catalogue | unknown split, missing video, duplicate id, bad genres | ``file:row: reason``, all problems at once | test_catalogue.py |
| config | unknown key, wrong type, value out of range | error names the key (and the file) | test_config.py |
| demo-world | impossible world settings | error names the setting | test_demo_world.py::test_bad_world_config_is_refused |
| detect-shots | unreadable / empty / too-short video among good ones | ``failures.jsonl`` row with the reason, others processed | test_detect_shots_stage.py::test_bad_inputs_are_recorded_and_others_processed |
| shots library | truncated or non-video file | readable error naming the file | test_shots.py::test_unreadable_videos_raise_readable_errors |
| build-movie-pairs | malformed watch log, unknown movie, bad timestamp | ``file:row: reason``; documented skips counted | test_movie_pairs.py::test_bad_metadata |
| mine-scene-pairs | movie pair with an unknown movie or too few shots | skipped with its reason in ``failures.jsonl``, others mined | test_mine_scene_pairs_stage.py::test_bad_movie_pairs_are_skipped_with_a_reason |
| mine-scene-pairs | pair source that was not built | config error naming the file | test_mine_scene_pairs_stage.py::test_missing_source_is_a_config_error |
| mining library | n < 1, keep outside (0, 1], wrong shapes | ValueError naming the parameter | test_mining.py::test_bad_parameters_raise |
| scene encoder | input of the wrong shape | error naming the expected shape | test_scene_encoder.py::test_bad_input_shape_is_a_clear_error |
| evaluate | bad kind / split / label, unknown movie, shots out of range | every bad row as ``file:line: reason`` | test_evaluate.py::test_every_bad_row_is_reported_with_file_and_line |
| evaluate | evaluation movie in the pretraining split | refused (leakage guard) unless overridden | test_evaluate.py |
| embed | unreadable video among good ones | counted as failed with its reason, others embedded | test_scene_encoder.py (embed on bikes.mp4) |
| embed | truncated file (fewer frames than declared), override among videos, empty folder | failure row (detect-shots' rule) / taken as an override / error | test_first_contact.py |
| search / index | ambiguous bare file name, folder without an index, parquet without embeddings | error naming the candidates / what to run | test_first_contact.py |
| build-movie-pairs | catalogue without genres or synopses | exit 2 naming what is missing, nothing marked done | test_first_contact.py::test_metadata_free_catalogue_is_refused_not_done |
| training | Ctrl-C | one line, exit 130, last checkpoint kept | test_shot_encoder.py::test_ctrl_c_prints_one_line_and_keeps_the_checkpoint |
| embed / index | ``--out`` onto an input or a file it did not make | exit 2, nothing touched (``--force`` for a foreign file) | here (issue 29) |
| import-shot-features | a folder matching no movie; E_shot's features present | exit 2, nothing changed / needs ``--force`` | here (issue 29) |
| embed / index / search | non-finite embeddings (NaN weights), NaN rows, a NaN query | the video fails with the reason / exit 2 naming file and row / exit 2 naming the query | here (issue 29) |

The adversarial cases of issue 12 (FIFOs, playlists, rotated video, non-finite numbers, non-UTF-8
and BOM files, hostile model configs, VFR times, ...) follow below; kills, full disks, concurrent
runs and tampered checkpoints are in test_reliability.py. Case → behaviour: bench/RESULTS.md
("Adversarial findings").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import record_as_written
from helpers import tiny_export as _tiny_export

from movies2scenes.cli import main

ROOT = Path(__file__).resolve().parents[1]

# stage → (the upstream stage it needs first)
NEEDS = {
    "train-shot-encoder": "shots",
    "extract-shot-features": "shots",
    "train-movie-encoder": "shot_features",
    "mine-scene-pairs": "shots",
    "train-scene-encoder": "scene_pairs",
    "export": "scene_encoder",
    "evaluate": "export",
}


def _args(stage: str, run: Path, world: Path, *extra: str) -> list[str]:
    return [stage, "-c", str(ROOT / "configs" / "cpu-tiny.yaml"), f"run_dir={run}",
            f"catalogue={world / 'catalogue.csv'}", f"watch_logs={world / 'watch_logs.csv'}", *extra]


@pytest.mark.parametrize("stage", sorted(NEEDS))
def test_stage_before_its_input_is_refused_with_what_to_run(stage, small_world, tmp_path, capsys):
    extra = [f"evaluate.tasks=[{tmp_path / 'tasks.csv'}]"] if stage == "evaluate" else []
    if stage == "evaluate":
        (tmp_path / "tasks.csv").write_text("task,kind,movie_id,start_shot,end_shot,label,split\n")
    assert main(_args(stage, tmp_path / "run", small_world, *extra)) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "run" / NEEDS[stage] / "DONE.json"
    assert f"m2s {stage}: error:" in err and str(missing) in err and "run that stage first" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any folder (or lock) is made


@pytest.mark.parametrize("missing", ["watch_logs", "movie_pairs.kg_triples"])
def test_missing_input_files_leave_no_stage_folder(missing, small_world, tmp_path, capsys):
    """Issue 32 (5): build-movie-pairs with a missing watch log left movie_pairs/ with a .lock and a
    .duckdb-tmp folder behind."""
    extra = [f"{missing}={tmp_path / 'nope.csv'}"] + (["movie_pairs.sources=[kg]", "movie_pairs.combined=[]"] if "kg" in missing else [])
    assert main(_args("build-movie-pairs", tmp_path / "run", small_world, *extra)) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope.csv'}:" in err and "not found" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stage", ["train-shot-encoder", "train-movie-encoder", "train-scene-encoder"])
def test_half_written_input_is_not_taken_for_done(stage, small_world, tmp_path, capsys):
    """A killed upstream stage leaves shards/parts but no DONE.json: the next stage refuses it."""
    upstream = tmp_path / "run" / NEEDS[stage]
    (upstream / "parts").mkdir(parents=True)
    (upstream / "parts" / "000000.json").write_text("{}")
    (upstream / "shard-000000.tar").write_bytes(b"\0" * 1024)
    assert main(_args(stage, tmp_path / "run", small_world)) == 2
    err = capsys.readouterr().err
    assert str(upstream / "DONE.json") in err and "run that stage first" in err


@pytest.mark.parametrize("stage", ["detect-shots", "build-movie-pairs"])
def test_missing_catalogue_is_named(stage, tmp_path, capsys):
    assert main(_args(stage, tmp_path / "run", tmp_path / "nowhere")) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere" / "catalogue.csv") in err and "not found" in err


def test_unknown_stage_option_is_named(small_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(_args("train-shot-encoder", tmp_path / "run", small_world, "--no-such-option"))
    assert e.value.code == 2 and "--no-such-option" in capsys.readouterr().err


def test_bad_override_is_named_before_any_work(small_world, tmp_path, capsys):
    assert main(_args("detect-shots", tmp_path / "run", small_world, "shots.threshold=-3")) == 2
    assert "shots.threshold" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was written


# ----------------------------------------------------------------------------------------------
# adversarial inputs (issue 12): each of these failed before the fix


import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from testkit.videos import write_catalogue, write_video  # noqa: E402
from movies2scenes.catalogue import CatalogueError, load_catalogue, load_watch_logs  # noqa: E402
from movies2scenes.config import ConfigError, config_hash, load  # noqa: E402

CONFIG = str(ROOT / "configs" / "cpu-tiny.yaml")


def _cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "movies2scenes.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _remux_to_ts(src: Path, dest: Path) -> Path:
    import av

    with av.open(str(src)) as i, av.open(str(dest), "w", format="mpegts") as o:
        stream = o.add_stream_from_template(i.streams.video[0])
        for packet in i.demux(i.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                o.mux(packet)
    return dest


@pytest.mark.slow
def test_fifos_directories_and_playlists_are_per_movie_failures(bikes, tmp_path):
    """A FIFO used to hang detect-shots forever (its fingerprint opened it); an HLS playlist or an
    ffconcat list was decoded, reading the local files it names. Now each is a failure with its
    reason and the good movie is processed."""
    good = shutil.copy(bikes, tmp_path / "good.mp4")
    _remux_to_ts(bikes, tmp_path / "secret.ts")  # stands for any local file a list may point at
    (tmp_path / "play.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nsecret.ts\n"
                                        "#EXT-X-ENDLIST\n")
    (tmp_path / "list.mp4").write_text("ffconcat version 1.0\nfile secret.ts\n")  # a list with a video's name
    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "folder.mp4").mkdir()
    cat = write_catalogue(tmp_path / "cat.csv", [
        {"movie_id": "good", "video": str(good)}, {"movie_id": "fifo", "video": "fifo.mp4"},
        {"movie_id": "dir", "video": "folder.mp4"}, {"movie_id": "hls", "video": "play.m3u8"},
        {"movie_id": "concat", "video": "list.mp4"}])
    r = _cli(["detect-shots", "-c", CONFIG, f"run_dir={tmp_path / 'run'}", f"catalogue={cat}",
              "shots.threshold=27", "shots.work_size=64"], timeout=120)
    assert r.returncode == 0, r.stderr
    reasons = {f["movie_id"]: f["reason"] for f in map(json.loads, (tmp_path / "run" / "shots" / "failures.jsonl")
                                                         .read_text().splitlines())}
    assert set(reasons) == {"fifo", "dir", "hls", "concat"}
    assert "not a regular file" in reasons["fifo"] and "not a regular file" in reasons["dir"]
    assert "refused: a 'hls' file" in reasons["hls"] and "refused: a 'concat' file" in reasons["concat"]
    assert json.loads((tmp_path / "run" / "shots" / "DONE.json").read_text())["counts"]["ok"] == 1


def test_embed_refuses_playlists_and_fifos(bikes, tmp_path):
    from movies2scenes.retrieval import embed_video
    from movies2scenes.video import VideoError

    _remux_to_ts(bikes, tmp_path / "secret.ts")
    (tmp_path / "play.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nsecret.ts\n#EXT-X-ENDLIST\n")
    os.mkfifo(tmp_path / "fifo.mp4")
    for name, why in [("play.m3u8", "refused: a 'hls' file"), ("fifo.mp4", "not a regular file")]:
        with pytest.raises(VideoError, match=why):
            embed_video(tmp_path / name, None, load().shots, 3)


def test_rotated_phone_video_keeps_its_aspect(tmp_path):
    """A portrait phone video stores landscape frames plus a display rotation; decord applies the
    rotation, so the target size must be computed after it (it was squashed into landscape)."""
    import av

    from movies2scenes.shots import detect_shots, make_detector
    from movies2scenes.video import iter_frames, probe, scaled_size

    frame = np.zeros((64, 128, 3), np.uint8)
    frame[:, :32] = 255  # a white band on the left of the stored (landscape) frame
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=12)
        s.width, s.height, s.pix_fmt = 128, 64, "yuv420p"
        s.set_display_rotation(90)
        for _ in range(24):
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (64, 128, 90)
    size = scaled_size(info.width, info.height, 32)
    assert size == (32, 64)
    shots = list(detect_shots(iter_frames(path, size), info.fps, make_detector("content", 27.0, 4), 1, size, 64, 64))
    kf = shots[0].keyframes[0]
    assert kf.shape == (64, 32, 3)  # portrait, not squashed into 64 x 32
    # the stored band (a quarter of the width) is now a quarter of the *height*, at the top or bottom
    rows = kf[..., 0].mean(1)
    band = rows > 128
    assert 12 <= band.sum() <= 20 and (band[:8].all() or band[-8:].all()), rows.round()


def test_watch_logs_reject_non_finite_timestamps(tmp_path):
    logs = tmp_path / "logs.csv"
    logs.write_text("user_id,movie_id,timestamp\nu,a,nan\nu,a,inf\nu,a,1e400\nu,a,-Infinity\nu,a,12.5\n")
    with pytest.raises(CatalogueError) as e:
        load_watch_logs(logs, {"a"})
    for line in (2, 3, 4, 5):
        assert f"logs.csv:{line}: bad timestamp" in str(e.value)
    assert "logs.csv:6" not in str(e.value)


def test_non_utf8_files_are_named_by_file_and_line(tmp_path):
    from movies2scenes.kg import read_triples
    from movies2scenes.tasks import read_tasks

    logs = tmp_path / "logs.csv"
    logs.write_bytes(b"user_id,movie_id,timestamp\nu,a,1\nu,caf\xe9,2\n")
    with pytest.raises(CatalogueError, match=r"logs.csv:3: not UTF-8 text \(byte 0xe9 at column 6\)"):
        load_watch_logs(logs, {"a"})
    kg = tmp_path / "kg.csv"
    kg.write_bytes(b"head,relation,tail\na,director,\xff\xfe\n")
    with pytest.raises(CatalogueError, match=r"kg.csv:2: not UTF-8 text"):
        read_triples(kg)
    tasks = tmp_path / "tasks.csv"
    tasks.write_bytes(HEADER.encode() + b"place,classification,a,0,3,for\xeat,train\n")
    with pytest.raises(ConfigError, match=r"tasks.csv:2: not UTF-8 text"):
        read_tasks([str(tasks)], {"a": 10})
    cat = tmp_path / "cat.csv"
    cat.write_bytes(b"movie_id,video\na,a.mp4\nb,\x80.mp4\n")
    with pytest.raises(CatalogueError, match=r"cat.csv:3: not UTF-8 text"):
        load_catalogue(cat)


HEADER = "task,kind,movie_id,start_shot,end_shot,label,split\n"


def test_utf8_bom_files_are_read(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; it used to read as a missing first column."""
    from movies2scenes.tasks import read_tasks

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    cat = tmp_path / "cat.csv"
    cat.write_bytes("\ufeffmovie_id,video,genres\na,v.mp4,drama\n".encode())
    assert load_catalogue(cat).movies[0].genres == ("drama",)
    logs = tmp_path / "logs.csv"
    logs.write_bytes("\ufeffuser_id,movie_id,timestamp\nu,a,1\n".encode())
    assert len(load_watch_logs(logs, {"a"})) == 1
    tasks = tmp_path / "t.csv"
    tasks.write_bytes(("\ufeff" + HEADER + "place,classification,a,0,3,forest,train\n").encode())
    assert len(read_tasks([str(tasks)], {"a": 10})["place"]) == 1
    jsonl = tmp_path / "cat.jsonl"
    jsonl.write_bytes('\ufeff{"movie_id": "a", "video": "v.mp4"}\n'.encode())
    assert load_catalogue(jsonl).ids() == ["a"]


def test_jsonl_genres_must_be_strings(tmp_path):
    cat = tmp_path / "cat.jsonl"
    cat.write_text('{"movie_id": "a", "video": "v.mp4", "genres": ["drama", 3]}\n'
                   '{"movie_id": "b", "video": "v.mp4", "genres": {"x": 1}}\n'
                   '{"movie_id": "c", "video": "v.mp4", "genres": 7}\n'
                   '{"movie_id": "d", "video": "v.mp4", "genres": ["ok"]}\n')
    with pytest.raises(CatalogueError) as e:
        load_catalogue(cat)
    for line in (1, 2, 3):
        assert f"cat.jsonl:{line}: genres must be" in str(e.value)
    assert "cat.jsonl:4" not in str(e.value)


def test_task_rows_short_non_finite_or_without_labels(tmp_path):
    from movies2scenes.tasks import read_tasks

    f = tmp_path / "t.csv"
    f.write_text(HEADER + "place,classification,a,0,3,forest\n"
                 "age,regression,a,0,3,nan,train\nage,regression,a,0,3,inf,val\nage,regression,a,0,3,-1e999,test\n"
                 "age,regression,a,0,3,2.5,test\n")
    with pytest.raises(ConfigError) as e:
        read_tasks([str(f)], {"a": 10})
    msg = str(e.value)
    assert "t.csv:2: fewer fields than the header has" in msg
    for line in (3, 4, 5):
        assert f"t.csv:{line}: regression label" in msg and "not a finite number" in msg
    assert "t.csv:6" not in msg
    f.write_text(HEADER + "tags,multilabel,a,0,3,,train\ntags,multilabel,a,3,6,,val\ntags,multilabel,a,6,9,,test\n")
    with pytest.raises(ConfigError, match="task 'tags': every row has an empty label set"):
        read_tasks([str(f)], {"a": 10})


def test_a_task_without_positives_or_with_one_movie_is_skipped_not_nan():
    from movies2scenes.eval.protocol import Protocol, score_task
    from movies2scenes.eval.task import Task

    rows = [{"movie_id": f"m{i % 3}", "shots": (i,), "kind": "binary", "label": "0"} for i in range(6)]
    x = lambda clips: np.random.default_rng(0).normal(size=(len(clips), 4))  # noqa: E731
    entry = score_task(Protocol(), Task.from_rows("cut", rows), {"encoder": x}, False)
    assert "every clip has the same label" in entry["skipped"] and "encoder" not in entry
    one = [{**r, "movie_id": "m0", "label": str(i % 2)} for i, r in enumerate(rows)]
    entry = score_task(Protocol(), Task.from_rows("cut", one), {"encoder": x}, False)
    assert "1 movie(s)" in entry["skipped"]


def test_yaml_11_float_overrides_and_non_finite_numbers():
    cfg = load([], ["shot_encoder.train.lr=1e6", "movie_encoder.train.lr=2.5E-4"])
    assert cfg.shot_encoder.train.lr == 1e6 and cfg.movie_encoder.train.lr == 2.5e-4
    for bad in ("shot_encoder.train.lr=.nan", "shot_encoder.train.lr=1e400", "shot_encoder.train.lr=.inf"):
        with pytest.raises(ConfigError, match="expected a finite number"):
            load([], [bad])
    with pytest.raises(ConfigError, match="expected an integer"):
        load([], ["shot_encoder.train.batch_size=1e3"])


def test_runtime_settings_do_not_change_config_hashes():
    """num_workers & co. change speed, not results: a finished stage stays finished and a checkpoint
    stays resumable when only they change (it was refused)."""
    a = load([CONFIG], [])
    b = load([CONFIG], ["shot_encoder.train.num_workers=7", "shots.decode_threads=3",
                        "scene_encoder.train.keep_checkpoints=9", "shot_features.num_workers=5"])
    for section in ("shots", "shot_encoder", "shot_features", "scene_encoder"):
        assert config_hash(getattr(a, section)) == config_hash(getattr(b, section)), section
    c = load([CONFIG], ["shot_encoder.train.lr=0.5"])
    assert config_hash(a.shot_encoder) != config_hash(c.shot_encoder)


def test_search_arguments_are_checked(tmp_path, capsys):
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "index.json").write_text('{"metric": "cosine"}')
    q = tmp_path / "q.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"video": ["a.mp4"], "start_time": [0.0], "end_time": [1.0], "embedding": [[1.0]]}), q)
    assert main(["search", str(idx), "--query", str(q), "--row", "0", "-k", "0"]) == 2
    assert "-k must be >= 1" in capsys.readouterr().err
    assert main(["search", str(idx), "--query", str(q), "--at", "x:abc"]) == 2
    assert "'abc' is not a time in seconds" in capsys.readouterr().err


@pytest.mark.parametrize("edit,why", [
    ({"depth": 100000}, "vit.depth 100000 but .* holds 2 blocks"),
    ({"embed_dim": 300000}, r"does not match .*cls_token: config gives \(1, 1, 300000\), file has \(1, 1, 48\)"),
    ({"img_size": 4096}, r"pos_embed: config gives \(1, 262145, 48\)"),
    ({"depth": "two"}, "vit.depth: expected an integer"),
    ({"extra": 1}, "unknown key 'vit.extra'"),
])
def test_hostile_model_config_is_refused_before_anything_is_built(edit, why, tmp_path):
    """The model config is checked against the safetensors header: depth=100000 / embed_dim=300000 used
    to be built (exhausting memory) before any weight was read."""
    import time

    from movies2scenes.export import load_scene_encoder, load_timm_backbone
    from movies2scenes.models.folder import load_vit
    from movies2scenes.models.weights import ModelFileError

    export = _tiny_export(tmp_path)
    ours = json.loads((export / "movies2scenes.json").read_text())
    ours["vit"].update(edit)
    (export / "movies2scenes.json").write_text(json.dumps(ours))
    timm_cfg = json.loads((export / "config.json").read_text())  # edited consistently in both files
    timm_cfg["model_args"].update({k: v for k, v in edit.items() if k in timm_cfg["model_args"]})
    (export / "config.json").write_text(json.dumps(timm_cfg))
    for loader in (load_scene_encoder, load_timm_backbone, load_vit):
        t = time.perf_counter()
        with pytest.raises(ModelFileError, match=why):
            loader(export)
        assert time.perf_counter() - t < 5


def test_corrupted_model_files_are_named(tmp_path, capsys):
    from movies2scenes.export import load_scene_encoder
    from movies2scenes.models.weights import ModelFileError

    export = _tiny_export(tmp_path)
    good = (export / "config.json").read_bytes()
    for bad, why in [(b"{not json", "not readable JSON"), (b"[1, 2]", "expected a JSON object"),
                     (b"\xff\xfe{}", "not readable JSON")]:
        (export / "config.json").write_bytes(bad)
        with pytest.raises(ModelFileError, match=f"config.json: {why}"):
            load_scene_encoder(export)
    (export / "config.json").write_bytes(good)
    (export / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(ModelFileError, match="model.safetensors: not a readable safetensors file"):
        load_scene_encoder(export)
    video = tmp_path / "v.mp4"
    write_video(video, [np.zeros((32, 32, 3), np.uint8)] * 20)
    assert main(["embed", str(video), "--encoder", str(export), "--out", str(tmp_path / "e.parquet")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: not a readable safetensors file" in err and "Traceback" not in err


def test_movie_encoder_config_is_checked_against_its_weights(encoded_run, tmp_path):
    from movies2scenes.models.weights import ModelFileError
    from movies2scenes.models.movie import load_movie_encoder

    src, _ = encoded_run
    enc = tmp_path / "movie_encoder"
    shutil.copytree(src / "movie_encoder", enc)
    assert load_movie_encoder(enc) is not None
    c = json.loads((enc / "config.json").read_text())
    for edit, why in [({"hidden": 10**9}, r"fc1.weight: config gives \(1000000000"), ({"max_shots": 10**7},
                      "classifier.weight"), ({"kernel": "x"}, "kernel must be an integer")]:
        (enc / "config.json").write_text(json.dumps({**c, **edit}))
        with pytest.raises(ModelFileError, match=why):
            load_movie_encoder(enc)


@pytest.mark.slow
def test_embed_times_on_variable_frame_rate_video(tmp_path):
    """Times come from the frames' presentation timestamps, not index / average fps."""
    from fractions import Fraction

    import av
    import pyarrow.parquet as pq

    export = _tiny_export(tmp_path)
    path, t, pts = tmp_path / "vfr.mp4", 0, []
    rng = np.random.default_rng(0)
    colours = [rng.integers(0, 255, 3) for _ in range(3)]
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i in range(72):  # 3 shots of 24 frames: 40 ms frames, then 200 ms frames, then 40 ms
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), colours[i // 24], np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            pts.append(t / 1000)
            t += 200 if 24 <= i < 48 else 40
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out = tmp_path / "e.parquet"
    assert main(["embed", str(path), "--encoder", str(export), "--out", str(out), "-n", "1",
                 "shots.min_shot_frames=4", "shots.threshold=20"]) == 0
    rows = pq.read_table(out).to_pylist()
    assert [r["start_frame"] for r in rows] == [0, 24, 48]
    assert [r["start_time"] for r in rows] == pytest.approx([pts[0], pts[24], pts[48]], abs=1e-3)
    assert rows[-1]["end_time"] == pytest.approx(pts[-1] + 0.04, abs=1e-3)


@pytest.mark.slow
def test_strict_fails_also_when_the_stage_is_up_to_date(bikes, tmp_path):
    good = shutil.copy(bikes, tmp_path / "good.mp4")
    (tmp_path / "bad.mp4").write_text("no video")
    cat = write_catalogue(tmp_path / "cat.csv", [{"movie_id": "g", "video": str(good)},
                                                  {"movie_id": "b", "video": "bad.mp4"}])
    args = ["detect-shots", "-c", CONFIG, f"run_dir={tmp_path / 'run'}", f"catalogue={cat}", "shots.work_size=64"]
    assert main(args) == 0
    assert main([*args, "--strict"]) == 1  # DONE.json matches, but a movie failed


@pytest.mark.slow
def test_nan_shot_feature_is_named_by_movie_and_shot(encoded_run, tmp_path, capsys):
    src, overrides = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    shutil.rmtree(run / "movie_encoder")
    ov = [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={run}"]
    feats = sorted((run / "shot_features").glob("features-*.npy"))[1]
    x = np.load(feats)
    x[2, 5] = np.nan
    np.save(feats, x)
    record_as_written(feats)  # NaN as extract-shot-features wrote it (an edited file is refused earlier)
    movie = {r["file"]: r["movie_id"] for r in __import__("pyarrow.parquet", fromlist=["x"])
             .read_table(run / "shot_features" / "index.parquet").to_pylist()}[feats.name]
    assert main(["train-movie-encoder", "-c", CONFIG, *ov]) == 2
    err = capsys.readouterr().err
    assert f"movie {movie!r} has non-finite shot features at shot(s) 2 (1 of" in err and feats.name in err


@pytest.mark.slow
def test_a_replaced_model_file_is_noticed_by_the_up_to_date_check(encoded_run, tmp_path, capsys):
    src, overrides = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    ov = [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={run}"]
    model = run / "movie_encoder" / "model.safetensors"
    original = model.read_bytes()
    assert main(["train-movie-encoder", "-c", CONFIG, *ov]) == 0
    assert "up to date" in capsys.readouterr().out
    shutil.copy(run / "shot_encoder" / "model.safetensors", model)  # someone swapped the weights
    assert main(["train-movie-encoder", "-c", CONFIG, *ov]) == 0
    captured = capsys.readouterr()
    assert "sha256 differs" in captured.err and "up to date" not in captured.out
    assert model.read_bytes() == original  # rebuilt from the final checkpoint: the same weights


# ----------------------------------------------------------------------------------------------
# issue 29, class 2: a command never destroys what it did not make


def test_embed_and_index_never_write_over_their_inputs_or_foreign_files(bikes, tmp_path, capsys):
    import hashlib
    import shutil

    export = _tiny_export(tmp_path)
    video = shutil.copy(bikes, tmp_path / "clip.mp4")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    index_in = tmp_path / "scenes.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"video": ["v"], "scene": [0], "start_time": [0.0], "end_time": [1.0],
                             "embedding": [[0.5, 0.5]]}), index_in)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in [Path(video), export / "model.safetensors", notes, index_in]}
    cases = [
        (["embed", str(video), "--encoder", str(export), "--out", str(video)], "is an input"),
        (["embed", str(video), "--encoder", str(export), "--out", str(export / "model.safetensors")], "is an input"),
        (["embed", str(video), "--encoder", str(export), "--out", str(notes)], "not a Parquet file of `m2s embed`"),
        (["index", str(index_in), "--out", str(index_in)], "is an input"),
        (["index", str(index_in), "--out", str(notes)], "not an index folder"),
    ]
    for args, why in cases:
        assert main(args) == 2, args
        assert why in capsys.readouterr().err, args
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before
    assert main(["index", str(index_in), "--out", str(tmp_path / "idx")]) == 0  # its own kind: fine
    assert main(["index", str(index_in), "--out", str(tmp_path / "idx")]) == 0  # and again over itself
    assert main(["index", str(index_in), "--out", str(notes), "--force"]) == 2  # a file, even forced: not a folder
    capsys.readouterr()


@pytest.mark.slow
def test_import_shot_features_never_replaces_features_with_nothing(encoded_run, tmp_path, capsys):
    import hashlib
    import json
    import shutil

    src, ov = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    args = ["-c", str(ROOT / "configs" / "cpu-tiny.yaml"), *[o for o in ov if not o.startswith("run_dir=")], f"run_dir={run}"]
    feats = run / "shot_features"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in feats.iterdir() if p.is_file()}
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "not-a-movie.npy").write_bytes(b"x")
    assert main(["import-shot-features", str(wrong), *args, "--force"]) == 2
    assert "nothing was changed" in capsys.readouterr().err
    right = tmp_path / "right"
    right.mkdir()
    import numpy as np

    movie = json.loads((feats / "DONE.json").read_text())  # a valid import over E_shot's features
    assert movie["counts"]["movies"] > 0
    first = sorted(p for p in feats.glob("features-*.npy"))[0]
    np.save(right / (first.stem.removeprefix("features-") + ".npy"), np.load(first).astype(np.float32))
    assert main(["import-shot-features", str(right), *args]) == 2
    assert "--force" in capsys.readouterr().err
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in feats.iterdir() if p.is_file()} == before


def test_non_finite_embeddings_are_refused_by_embed_index_and_search(bikes, tmp_path, capsys):
    """issue 29, class 5: an encoder with NaN weights gives no rows (the video fails, naming why);
    NaN rows are never indexed; a NaN query is named, not "every scene was excluded"."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import load_file, save_file

    export = _tiny_export(tmp_path)
    weights = load_file(str(export / "model.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              str(export / "model.safetensors"))
    out = tmp_path / "scenes.parquet"
    assert main(["embed", str(bikes), "--encoder", str(export), "--out", str(out)]) == 1
    assert "non-finite embedding" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == 0
    assert "non-finite" in json.loads((tmp_path / "scenes.parquet.failures.jsonl").read_text())["reason"]

    rows = {"video": ["a", "a", "b"], "scene": [0, 1, 0], "start_shot": [0, 1, 0], "end_shot": [3, 4, 3],
            "start_frame": [0, 10, 0], "end_frame": [30, 40, 30], "start_time": [0.0, 0.4, 0.0],
            "end_time": [1.2, 1.6, 1.2], "embedding": [[1.0, 0.0], [float("nan"), 1.0], [0.0, 1.0]]}
    pq.write_table(pa.table(rows), tmp_path / "mixed.parquet")
    assert main(["index", str(tmp_path / "mixed.parquet"), "--out", str(tmp_path / "idx")]) == 2
    assert "mixed.parquet row 1" in capsys.readouterr().err
    assert not (tmp_path / "idx" / "index.faiss").exists()
    good = {k: [v[0], v[2]] for k, v in rows.items()}
    pq.write_table(pa.table(good), tmp_path / "good.parquet")
    assert main(["index", str(tmp_path / "good.parquet"), "--out", str(tmp_path / "idx")]) == 0
    assert main(["search", str(tmp_path / "idx"), "--query", str(tmp_path / "mixed.parquet"), "--row", "1"]) == 2
    assert "query embedding is not finite" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# issue 29, class 3: the exit-status contract — each problem named, with status 2 or 4


def _npy_declaring(path: Path, shape: tuple[int, ...]) -> None:
    """A .npy whose header declares ``shape`` float32 but which holds 64 bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(b"\0" * 64)


def _import_run(encoded_run, tmp_path: Path) -> tuple[Path, list[str], dict[str, list[dict]]]:
    """A copy of ``encoded_run``, the import's arguments (``--force``: over E_shot's features) and
    each movie's shot rows."""
    import pyarrow.parquet as pq

    src, ov = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    args = ["-c", CONFIG, *[o for o in ov if not o.startswith("run_dir=")], f"run_dir={run}", "--force"]
    index = pq.read_table(run / "shots" / "index.parquet").to_pylist()
    return run, args, {m: [r for r in index if r["movie_id"] == m] for m in sorted({r["movie_id"] for r in index})}


@pytest.mark.slow
def test_imported_files_that_cannot_be_read_fail_their_movie_only(encoded_run, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    run, args, shots = _import_run(encoded_run, tmp_path)
    movies = sorted(shots)
    source = tmp_path / "mine"
    source.mkdir()
    huge, empty, strings, lists, good = movies[0], movies[1], movies[2], movies[3], movies[0]
    _npy_declaring(source / f"{huge}.npy", (10**7, 10**7))  # today's main: MemoryError, the import aborts
    pq.write_table(pa.table({"embedding": pa.array([], pa.list_(pa.float32()))}), source / f"{empty}.parquet")
    n = len(shots[strings])
    pq.write_table(pa.table({"start_time": [str(r["start_time"]) for r in shots[strings]],
                             "end_time": [str(r["end_time"]) for r in shots[strings]],
                             "embedding": [[1.0, 2.0]] * n}), source / f"{strings}.parquet")
    n = len(shots[lists])
    pq.write_table(pa.table({"start_time": [[r["start_time"]] for r in shots[lists]],
                             "end_time": [[r["end_time"]] for r in shots[lists]],
                             "embedding": [[1.0, 2.0]] * n}), source / f"{lists}.parquet")
    assert main(["import-shot-features", str(source), *args]) == 2  # every movie failed: nothing replaced
    err = capsys.readouterr().err
    assert "nothing was changed" in err and "Traceback" not in err
    for movie, why in [(huge, "not a readable .npy array"), (empty, "no rows"), (strings, "must hold numbers"),
                       (lists, "must hold numbers")]:
        assert f"movie {movie!r}" in err and why in err, (movie, why, err)
    # one good file among them: it is imported, the others are failures of their own movie (exit 1)
    (source / f"{huge}.npy").unlink()
    np.save(source / f"{good}.npy", np.ones((len(shots[good]), 2), np.float32))
    assert main(["import-shot-features", str(source), *args]) == 1
    failures = [json.loads(line) for line in (run / "shot_features" / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["movie_id"] for f in failures) == sorted([empty, strings, lists])


def _index_folder(tmp_path: Path) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"video": ["a", "a", "b"], "scene": [0, 1, 0], "start_shot": [0, 1, 0], "end_shot": [3, 4, 3],
            "start_frame": [0, 10, 0], "end_frame": [30, 40, 30], "start_time": [0.0, 0.4, 0.0],
            "end_time": [1.2, 1.6, 1.2], "embedding": [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]}
    emb = tmp_path / "scenes.parquet"
    pq.write_table(pa.table(rows), emb)
    assert main(["index", str(emb), "--out", str(tmp_path / "idx")]) == 0
    return tmp_path / "idx", emb


def test_damaged_index_folders_are_named_by_search(tmp_path, capsys):
    import pyarrow.parquet as pq

    idx, emb = _index_folder(tmp_path)
    search = ["search", str(idx), "--query", str(emb), "--row", "0"]
    assert main(search) == 0
    capsys.readouterr()
    good = {p.name: p.read_bytes() for p in idx.iterdir()}

    def damaged(name: str, data: bytes, why: str) -> None:
        (idx / name).write_bytes(data)
        assert main(search) == 2, name  # today's main: tracebacks, or a metric 'dot' used as L2
        err = capsys.readouterr().err
        assert str(idx / name) in err and why in err and "m2s index" in err, err
        (idx / name).write_bytes(good[name])

    record = json.loads(good["index.json"])
    damaged("index.json", b"{not json", "not the record")
    damaged("index.json", json.dumps(record | {"metric": "dot"}).encode(), "cosine or l2")
    damaged("index.faiss", good["index.faiss"][:-40], "bytes where")
    short = tmp_path / "short.parquet"
    pq.write_table(pq.read_table(idx / "meta.parquet").slice(0, 2), short)
    damaged("meta.parquet", short.read_bytes(), "not the file")
    # a folder from before the record: the files' own checks still name what is wrong
    (idx / "index.json").write_text(json.dumps({k: v for k, v in record.items() if k != "files"}))
    (idx / "meta.parquet").write_bytes(short.read_bytes())
    assert main(search) == 2
    assert "meta.parquet 2 rows" in capsys.readouterr().err


def test_a_read_only_run_dir_is_fine_when_nothing_is_to_do(shots_run, small_world, tmp_path, monkeypatch, capsys):
    import errno

    from movies2scenes.stages import protocol

    run = tmp_path / "run"
    shutil.copytree(shots_run, run)
    (run / "shots" / ".lock").unlink(missing_ok=True)
    real_open = os.open

    def read_only(path, flags, *a):  # what a read-only mount (or another user's folder) answers
        if str(path).endswith(".lock") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(protocol.os, "open", read_only)
    args = _args("detect-shots", run, small_world)
    assert main(args) == 0  # today's main: a traceback creating .lock, exit 1
    assert "up to date" in capsys.readouterr().out
    assert main([*args, "--force"]) == 4  # work to do: cannot write, the documented status
    err = capsys.readouterr().err
    assert "cannot write" in err and ".lock" in err and "Read-only file system" in err


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint_exits_4(encoded_run, tmp_path):
    import resource

    src, ov = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("shot_encoder", "shot_features", "movie_*"))
    args = ["train-shot-encoder", "-c", CONFIG, *[o for o in ov if not o.startswith("run_dir=")], f"run_dir={run}",
            "shot_encoder.train.checkpoint_every=1", "shot_encoder.train.max_steps=2"]
    limit = 64 << 10  # the optimiser state (torch.save) is larger than this; logs and progress are not

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([sys.executable, "-m", "movies2scenes.cli", *args], capture_output=True, text=True,
                       preexec_fn=small_disk, timeout=600)
    assert r.returncode == 4, r.stderr[-2000:]  # today's main: "unexpected pos" traceback, exit 1
    assert "cannot write the checkpoint" in r.stderr or "cannot write" in r.stderr
    assert "Traceback" not in r.stderr and not (run / "shot_encoder" / "DONE.json").exists()
    assert not list((run / "shot_encoder" / "checkpoints").glob("checkpoint-*"))  # nothing half-written kept


def test_csv_fields_long_and_too_long(tmp_path):
    long = "x" * (200 << 10)  # a 200 KiB synopsis: Python's default limit (128 KiB) refused it
    cat = write_catalogue(tmp_path / "cat.csv", [{"movie_id": "a", "video": "a.mp4", "synopsis": long}])
    assert load_catalogue(cat).movies[0].synopsis == long
    huge = tmp_path / "huge.csv"
    huge.write_text("movie_id,video,synopsis\na,a.mp4,ok\nb,b.mp4," + "y" * (17 << 20) + "\n")
    with pytest.raises(CatalogueError, match=r"huge.csv:\d+: not a readable CSV row \(a field is longer than 16 MiB\)"):
        load_catalogue(huge)


@pytest.mark.parametrize("case", ["folder", "latin-1", "deep", "list"])
def test_config_files_that_are_not_configs_are_named(case, small_world, tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    if case == "folder":
        path.mkdir()
        why = "is a folder"
    elif case == "latin-1":
        path.write_bytes("run_dir: caf\xe9\n".encode("latin-1"))
        why = "not UTF-8"
    elif case == "deep":
        path.write_text("seed: " + "[" * 20000 + "]" * 20000 + "\n")
        why = "nested too deeply"
    else:
        path.write_text("- a\n- b\n")
        why = "expected a mapping"
    assert main(["detect-shots", "-c", str(path), f"run_dir={tmp_path / 'run'}",
                 f"catalogue={small_world / 'catalogue.csv'}"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and why in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# issue 29, class 4: small inputs that ask for large work


def test_a_yaml_billion_laughs_is_refused_with_a_short_message(tmp_path):
    levels = ["[&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "laughs.yaml"
    path.write_text("seed: " + ", ".join(levels) + "]\n")  # 9^10 items once expanded
    with pytest.raises(ConfigError) as e:  # today's main: ~3 GB and minutes printing the value
        load([path])
    assert "seed: expected an integer" in str(e.value) and len(str(e.value)) < 500


@pytest.mark.parametrize("edit, why", [
    ({"shots_per_scene": 0}, "shots_per_scene must be an integer"),
    ({"shots_per_scene": -3}, "shots_per_scene must be an integer"),
    ({"shots_per_scene": "nine"}, "shots_per_scene must be an integer"),
    ({"shots": {"keyframe_size": 30000}}, "shots.keyframe_size must be 8..4096"),
])
def test_export_settings_are_checked_before_use(edit, why, bikes, tmp_path, capsys):
    export = _tiny_export(tmp_path)
    settings = json.loads((export / "movies2scenes.json").read_text())
    (export / "movies2scenes.json").write_text(json.dumps(settings | edit))
    assert main(["embed", str(bikes), "--encoder", str(export), "--out", str(tmp_path / "e.parquet")]) == 2
    assert why in capsys.readouterr().err
    assert not (tmp_path / "e.parquet").exists()


def test_quantised_export_weights_are_refused(bikes, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    export = _tiny_export(tmp_path)
    weights = load_file(str(export / "model.safetensors"))
    save_file({k: (v * 10).to(torch.int8) for k, v in weights.items()}, str(export / "model.safetensors"))
    assert main(["embed", str(bikes), "--encoder", str(export), "--out", str(tmp_path / "e.parquet")]) == 2
    assert "is I8" in capsys.readouterr().err  # today's main: loads them, silently cast


# ----------------------------------------------------------------------------------------------
# issue 29, class 5 (rest) and class 6


def test_one_video_under_several_ids_is_decoded_once_and_named(bikes, tmp_path, capsys):
    video = tmp_path / "film.mp4"
    shutil.copy(bikes, video)
    copy = tmp_path / "copy.mp4"
    shutil.copy(bikes, copy)
    os.symlink(video, tmp_path / "link.mp4")
    cat = write_catalogue(tmp_path / "cat.csv", [
        {"movie_id": "a", "video": str(video)}, {"movie_id": "b", "video": str(video)},
        {"movie_id": "c", "video": str(copy)}, {"movie_id": "d", "video": str(tmp_path / "link.mp4")}])
    assert main(["catalogue", "--check", str(cat)]) == 0
    err = capsys.readouterr().err
    assert all(f"movie {m!r} has the same video as 'a'" in err for m in "bcd")  # today's main: silent
    run = tmp_path / "run"
    assert main(["detect-shots", "-c", CONFIG, f"run_dir={run}", f"catalogue={cat}"]) == 0
    done = json.loads((run / "shots" / "DONE.json").read_text())
    assert done["counts"]["ok"] == 1 and done["counts"]["failed"] == 3  # decoded once
    failures = {json.loads(line)["movie_id"]: json.loads(line)["reason"]
                for line in (run / "shots" / "failures.jsonl").read_text().splitlines()}
    assert sorted(failures) == ["b", "c", "d"] and all("the same video as movie 'a'" in r for r in failures.values())


def test_the_leakage_guard_compares_videos_not_only_ids(tmp_path):
    from movies2scenes.stages.evaluate import leakage
    from movies2scenes.stages.protocol import write_pretraining_movies

    export, shots = tmp_path / "export", tmp_path / "shots"
    (shots / "parts").mkdir(parents=True)
    export.mkdir()
    write_pretraining_movies(export, ["train1", "train2"])
    for movie, fp in [("train1", "1111111111111111"), ("train2", "2222222222222222"),
                      ("test1", "1111111111111111"), ("test2", "3333333333333333")]:
        (shots / "parts" / f"{movie}.json").write_text(json.dumps({"status": "ok", "fingerprint": fp}))
    tasks = {"t": [{"movie_id": "test1"}, {"movie_id": "test2"}, {"movie_id": "train2"}]}
    # today's main: ["train2"] only — test1 is train1's film under another id
    assert leakage(tasks, export, shots) == ["test1 (the video of pretraining movie 'train1')", "train2"]


def test_watch_logs_with_mixed_line_endings_and_date_like_numbers(tmp_path, capsys):
    import csv

    from movies2scenes.cowatch import validate_watch_logs

    logs = tmp_path / "logs.csv"
    with open(logs, "w", newline="") as f:  # Python's csv writes CRLF
        w = csv.writer(f)
        w.writerow(["user_id", "movie_id", "timestamp"])
        w.writerows([["u1", "a", 1600000000], ["u2", "a", 1600000100]])
    with open(logs, "a") as f:
        f.write("u3,a,20240101\n")  # a row appended with `echo >>`: LF, and a YYYYMMDD date
    assert validate_watch_logs(logs, {"a"}) == 3  # today's main: DuckDB's sniffer refuses the file, no row named
    err = capsys.readouterr().err
    assert f"{logs}:4: 1 timestamp(s) look like YYYYMMDD dates" in err and "2024-01-01" in err


@pytest.mark.parametrize("run_dir", ["/", "/tmp/..", ""])
def test_run_dir_at_the_root_is_refused(run_dir):
    with pytest.raises(ConfigError, match="run_dir must name a run folder"):
        load([], [f"run_dir={run_dir}"])


@pytest.mark.slow
def test_import_names_fifos_folders_and_upper_case_extensions(encoded_run, tmp_path, capsys):
    run, args, shots = _import_run(encoded_run, tmp_path)
    movies = sorted(shots)
    source = tmp_path / "mine"
    source.mkdir()
    os.mkfifo(source / f"{movies[0]}.npy")
    (source / f"{movies[1]}.npy").mkdir()
    np.save(source / f"{movies[2]}.npy", np.ones((len(shots[movies[2]]), 2), np.float32))
    (source / f"{movies[2]}.npy").rename(source / f"{movies[2]}.NPY")
    np.save(source / f"{movies[3]}.npy", np.ones((len(shots[movies[3]]), 2), np.float32))
    assert main(["import-shot-features", str(source), *args]) == 1
    out = capsys.readouterr().out
    assert f"{movies[0]}.npy is a FIFO (named pipe)" in out and f"{movies[1]}.npy is a folder" in out
    assert f"not lower case (rename to .npy / .parquet): {movies[2]}.NPY" in out


def test_hints_point_at_what_to_use(exported_run, bikes, tmp_path, capsys):
    """Issue 32 (5): `m2s embed --encoder RUN_DIR` names the run's export; `m2s search FILE.parquet`
    no longer suggests `m2s index FILE.parquet --out FILE.parquet` (which would write onto it)."""
    run = exported_run[0]
    assert main(["embed", "--encoder", str(run), str(bikes), "--out", str(tmp_path / "e.parquet")]) == 2
    assert f"use {run / 'export'}" in capsys.readouterr().err
    emb = tmp_path / "scenes.parquet"
    emb.write_bytes(b"PAR1")
    assert main(["search", str(emb), "--query", str(emb), "--row", "0"]) == 2
    err = capsys.readouterr().err
    assert "a file, not an index folder" in err and f"--out {emb} " not in err and f"--out {tmp_path / 'scenes.index'}" in err


# ----------------------------------------------------------------------------------------------
# issue 41 class 1: every record goes through one validated reader


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not json", "a list", "files of the wrong shape", "a folder"])
def test_a_damaged_done_record_is_refused_by_readers_and_redone_by_its_owner(encoded_run, tmp_path, capsys, damage):
    """A shots/DONE.json that is not JSON, not an object, has a `files` entry of the wrong shape or
    is a folder: a stage that reads it and `m2s summary` exit 2 naming the file and the command
    that repairs it (before: JSONDecodeError / TypeError tracebacks, exit 1); the owning stage takes
    its own damaged record for "not done" and redoes (a folder it did not make it does not replace)."""
    src, overrides = encoded_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    ov = [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={run}"]
    done = run / "shots" / "DONE.json"
    rec = json.loads(done.read_text())
    if damage == "a folder":
        done.unlink()
        done.mkdir()
    else:
        done.write_text({"not json": '{"config_hash": "ab', "a list": "[1, 2]",
                         "files of the wrong shape": json.dumps(rec | {"files": {"x.tar": "abc"}})}[damage])
    capsys.readouterr()
    assert main(["train-shot-encoder", "-c", str(ROOT / "configs" / "cpu-tiny.yaml"), *ov, "--force"]) == 2
    err = capsys.readouterr().err
    assert str(done) in err and "m2s detect-shots --force" in err and "Traceback" not in err
    assert main(["summary", str(run)]) == 2
    out, err = capsys.readouterr()
    assert str(done) in out + err and "DAMAGED" in out
    if damage != "a folder":
        assert main(["detect-shots", "-c", str(ROOT / "configs" / "cpu-tiny.yaml"), *ov]) == 0
        assert "taken for not done; redoing" in capsys.readouterr().err
        assert json.loads(done.read_text())["config_hash"] == rec["config_hash"]


def test_a_truncated_report_is_named_by_the_summary(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "DONE.json").write_text(json.dumps({"config_hash": "a", "input_hash": "b", "counts": {}}))
    (run / "eval" / "report.json").write_text('{"tasks": {"place": {"kind": "classif')
    assert main(["summary", str(run)]) == 2
    out, err = capsys.readouterr()
    assert "report.json: not a readable report" in out and "m2s evaluate --force" in out and "Traceback" not in err


def test_a_folder_where_a_part_file_belongs_is_named(shots_run, small_world, tmp_path, capsys):
    """Issue 41 (minor): a folder in place of a part record was reported as "free space / fix
    permissions" (exit 4) without saying what is in the way."""
    import shutil

    from movies2scenes.cli import main

    run = tmp_path / "run"
    shutil.copytree(shots_run, run)
    part = sorted((run / "shots" / "parts").glob("*.json"))[0]
    part.unlink()
    (part / "inner").mkdir(parents=True)
    capsys.readouterr()
    assert main(["detect-shots", "-c", str(ROOT / "configs" / "cpu-tiny.yaml"), f"run_dir={run}",
                 f"catalogue={small_world / 'catalogue.csv'}", "--force"]) == 4
    err = capsys.readouterr().err
    assert str(part) in err and "a folder is where this file belongs" in err


def test_search_on_a_run_refuses_the_index_folder_filters(exported_run, capsys):
    """Issue 41 (minor): `m2s search RUN --movie M --video/--exclude` ignored the filters silently."""
    from movies2scenes.cli import main

    run = exported_run[0]
    assert main(["search", str(run), "--movie", "m0000", "--exclude", "video"]) == 2
    assert "--video, --exclude" in capsys.readouterr().err
