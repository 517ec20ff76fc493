# Two commands a newcomer needs: `make repro` (the whole DAG) and `make test` (the suite; CI also runs
# `make test-heavy`).
# Both create .venv on first use and install the pinned stack (about 1.5 minutes).
VENV ?= .venv
# The interpreter .venv is created with (3.11 or 3.12; e.g. `make test BASE_PYTHON=python3.12`).
BASE_PYTHON ?= python3.11
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# DVC stages call `python`; this makes it the project's interpreter.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: venv repro test test-heavy test-all test-fast lint format examples clean

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || $(BASE_PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	# torch first, pinned: a torch==2.13.0 already in .venv (e.g. the CPU-only build) is kept; otherwise pip
	# takes PyPI's build, on Linux the CUDA one, or a local CPU wheel where pip is given one (README, Install).
	$(PYTHON) -m pip install --disable-pip-version-check -q torch==2.13.0
	$(PYTHON) -m pip install --disable-pip-version-check -q --no-build-isolation -e ".[dev]"
	touch $(INSTALLED)

# One local Ray runtime for the whole DAG, which every stage joins (a stage of a plain `dvc repro` starts and
# stops its own: about 6 s each); it stops when `dvc repro` ends.
repro: $(INSTALLED)
	$(PYTHON) -m pipeline.distributed.shared_runtime -- $(VENV)/bin/dvc repro

# The suite without its `heavy` proofs (target: 6 minutes on 2 cores); `test-heavy` runs those
# (CI runs both, one after the other); `test-all` runs everything in one pytest run. Each prints its 15
# slowest tests at the end so the suite's time stays visible.
test: $(INSTALLED)
	$(PYTHON) -m pytest -m "not heavy" --durations=15

test-heavy: $(INSTALLED)
	$(PYTHON) -m pytest -m heavy --durations=15

test-all: $(INSTALLED)
	$(PYTHON) -m pytest --durations=15

test-fast: $(INSTALLED)
	$(PYTHON) -m pytest -m "not slow"

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

examples: $(INSTALLED)
	$(PYTHON) scripts/example_images.py

clean:
	rm -rf data/raw data/shards .pytest_cache
