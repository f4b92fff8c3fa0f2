"""The pipeline's stages: one module per stage, each holding only its own work; the protocol they
share (locks, hashes, DONE.json, who does which item) is :mod:`movies2scenes.stages.kit`."""
