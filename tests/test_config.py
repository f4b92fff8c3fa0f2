from pathlib import Path

import pytest

from movies2scenes.config import ConfigError, config_hash, load

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_load():
    for name in ("paper.yaml", "demo.yaml", "cpu-tiny.yaml", "ablation-keyframes3.yaml"):
        load([ROOT / "configs" / name])
    cfg = load([ROOT / "configs" / "demo.yaml", ROOT / "configs" / "ablation-keyframes3.yaml"])
    assert cfg.shots.keyframes == 3 and cfg.shots.keyframe_size == 64  # merged in order


def test_overrides_are_typed():
    cfg = load([], ["run_dir=runs/x", "shots.keyframes=3", "shots.threshold=20",
                    "demo_world.shot_frames=[4, 9]", "shots.threshold=null"])
    assert cfg.run_dir == "runs/x" and cfg.shots.keyframes == 3
    assert cfg.shots.threshold is None and cfg.demo_world.shot_frames == [4, 9]
    assert load([], ["run_dir=2024"]).run_dir == "2024"  # a string field stays a string
    assert isinstance(load([], ["demo_world.grain=2"]).demo_world.grain, float)


@pytest.mark.parametrize("override, names", [
    ("shots.keyframe=3", "shots.keyframe"),
    ("shots.keyframes=three", "shots.keyframes"),
    ("shots.keyframes=1.5", "shots.keyframes"),
    ("shots.detector=magic", "shots.detector"),
    ("shots=3", "shots"),
    ("nonsense=1", "nonsense"),
    ("shots.keyframes=0", "shots.keyframes"),
    ("demo_world.shot_frames=[9, 4]", "demo_world.shot_frames"),
    ("movie_encoder.max_shots=100", "movie_encoder.max_shots"),  # < two poolings of 16/8
    ("scene_pairs.keep_fraction=0", "scene_pairs.keep_fraction"),
    ("scene_pairs.pairs_source=ratings", "scene_pairs.pairs_source"),
    ("scene_encoder.init=imagenet", "scene_encoder.init"),
    ("scene_encoder.moco.temperature=0", "scene_encoder.moco.temperature"),
])
def test_bad_override_names_the_key(override, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load([], [override])


def test_bad_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("shots:\n  keyframes: 2\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*shots\.colour"):
        load([f])
    with pytest.raises(ConfigError, match="not found"):
        load([tmp_path / "missing.yaml"])
    f.write_text("shots: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load([f])
    with pytest.raises(ConfigError, match="key=value"):
        load([], ["justakey"])


def test_config_hash_tracks_content():
    a, b = load([], []), load([], ["shots.keyframes=2"])
    assert config_hash(a.shots) == config_hash(load([], []).shots)
    assert config_hash(a.shots) != config_hash(b.shots)


def test_each_section_checks_its_own_ranges_and_every_rule_names_a_real_key():
    """Issue 44: the range rules live in their sections (``rules()``); each names a key that exists,
    the defaults pass them all, and a shared section (MoCo, training) is checked wherever it is used."""
    from movies2scenes.config import Config, section_rules

    rules = section_rules(Config())
    assert all(ok for _, ok, _ in rules), [k for k, ok, _ in rules if not ok]
    for key, _, _ in rules:
        obj = Config()
        for part in key.split("."):
            assert hasattr(obj, part), key
            obj = getattr(obj, part)
    keys = {k for k, _, _ in rules}
    assert {"shot_encoder.moco.temperature", "scene_encoder.moco.temperature", "movie_encoder.train.batch_size",
            "scene_encoder.train.knn_movies", "scene_encoder.augment.crop_scale"} <= keys
