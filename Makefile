# The README's two commands: `make serve` and `make test`. Both set up .venv from scratch if needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: serve test lint setup-serve setup-dev default-model

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Serving needs no torch: ONNX Runtime / OpenVINO run the embedded default bundle.
setup-serve: $(BIN)/python
	$(PIP) -e ".[serve]"

# torch first: the pinned CPU build, so nothing pulls a CUDA build.
setup-dev: $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"

serve: setup-serve
	$(BIN)/yoloxpai serve

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -ra

# Reproduces the embedded default model (model/assets/): dataset, training, weights, bundle. ~1 h on 2 CPU cores.
DEFAULT_RUN ?= runs/default-nano
default-model: setup-dev
	$(BIN)/yoloxpai make-dataset shapes --out data/shapes --train 2000 --val 200 --img-size 320 --seed 0
	OMP_NUM_THREADS=1 $(BIN)/yoloxpai train --arch yolox-nano --data data/shapes --out $(DEFAULT_RUN) --epochs 35 \
		-b 16 --img-size 256 --workers 1 --lr-per-img 0.0025 --warmup-epochs 3 --no-aug-epochs 4 \
		--multiscale-sizes 6 10 --eval-interval 5 --no-progress
	$(BIN)/python -m model.assets.build_default --run $(DEFAULT_RUN)
	$(BIN)/yoloxpai eval --bundle model/assets/default_bundle --data data/shapes
