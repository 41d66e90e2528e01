# The README's two commands: `make serve` and `make test`. Both set up .venv from scratch if needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: serve test lint browser setup-serve setup-dev default-model

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

# Debian's Chromium + ChromeDriver for the demo page's browser test (tests/service/test_ui_browser.py), installed
# only where they are missing and we are root with apt-get (CI); anywhere else that test skips and says why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium + chromium-driver (apt) for the browser test"; \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			>/dev/null ) || echo "WARNING: chromium could not be installed: the browser test will skip"; \
	else \
		echo "chromium + chromium-driver missing and not installable here (root + apt-get): the browser test will skip"; \
	fi

test: lint browser
	$(BIN)/python -m pytest -q -ra

# Rebuilds the embedded default model (model/assets/) from Megvii's released COCO YOLOX-Nano in ../shared:
# ONNX import (BatchNorm statistics from coco-tiny) -> safetensors -> bundle, then its COCO AP on coco-tiny.
SHARED ?= ../shared
default-model: setup-dev
	$(BIN)/python -m model.assets.build_default --onnx $(SHARED)/weights/yolox_nano_coco.onnx \
		--calibration-images $(SHARED)/data/coco-tiny
	$(BIN)/yoloxpai eval --bundle model/assets/default_bundle --data $(SHARED)/data/coco-tiny
