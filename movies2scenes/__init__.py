"""movies2scenes: Movies2Scenes (Chen et al., CVPR 2023) scene-encoder pretraining.

The library (algorithms and I/O blocks) is importable without a GPU and without optional extras;
the stages that wire it together live in ``movies2scenes.stages``, the ``m2s`` command in ``movies2scenes.cli``.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy, so that `import movies2scenes` stays light (no torch/timm until needed)
    if name == "load_scene_encoder":
        from .export import load_scene_encoder

        return load_scene_encoder
    raise AttributeError(f"module 'movies2scenes' has no attribute {name!r}")
