# The README's two commands: `make serve` and `make test`. Both set up .venv from scratch if needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: serve test lint setup-serve setup-dev

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
