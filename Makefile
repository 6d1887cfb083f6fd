# `make help` lists the targets.
PYTHON ?= python
MODEL ?= tiny
LIMIT ?=

.PHONY: help setup demo test test-slow test-gpu

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

setup:  ## install the CPU torch wheel (if no torch yet), then the package with dev extras
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

demo:  ## a real job on the embedded default model (CPU, a few minutes)
	$(PYTHON) -m boe_bench limit=8

test:  ## the default test suite (what CI runs)
	$(PYTHON) -m pytest -q

test-slow:  ## slow tests only
	$(PYTHON) -m pytest -q -m slow

test-gpu:  ## GPU tests (need a CUDA device)
	$(PYTHON) -m pytest -q -m gpu
