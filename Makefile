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

# Rebuilds the embedded default model (model/assets/) from Megvii's released COCO YOLOX-Nano in ../shared:
# ONNX import (BatchNorm statistics from coco-tiny) -> safetensors -> bundle, then its COCO AP on coco-tiny.
SHARED ?= ../shared
default-model: setup-dev
	$(BIN)/python -m model.assets.build_default --onnx $(SHARED)/weights/yolox_nano_coco.onnx \
		--calibration-images $(SHARED)/data/coco-tiny
	$(BIN)/yoloxpai eval --bundle model/assets/default_bundle --data $(SHARED)/data/coco-tiny
