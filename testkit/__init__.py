"""Test oracles and fixtures that tests/ and bench/ share: real-footage trailers with known edits
(:mod:`testkit.footage`), small videos and catalogues (:mod:`testkit.videos`) and the shot-boundary
scoring against ground truth (:mod:`testkit.shot_scoring`). Not part of the movies2scenes
distribution: ``make setup`` installs it (editable) into the development environment only, so
tests and benches import it like any package and never import each other."""
