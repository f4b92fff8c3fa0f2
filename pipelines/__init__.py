"""Stages of the movies2scenes pipeline: config → library calls → artefacts in the run dir."""
