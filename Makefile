# fedadapt: two commands on a fresh machine: `make demo` and `make test`.
# torch==2.13.0 is installed first so that pip never pulls a multi-GB CUDA build;
# pyproject.toml keeps a range (torch>=2.4) for users who bring their own build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedadapt-installed
PYTEST_ARGS ?=

export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export RAY_DEDUP_LOGS := 0
export MPLBACKEND := Agg

.PHONY: setup demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The main job: the `quickstart` scenario on Flower's Ray simulation runtime; plots land in runs/quickstart.
demo: $(STAMP)
	$(VENV)/bin/fedadapt simulate quickstart --out runs/quickstart

## The whole test suite, slow end-to-end tests included (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

## The fast suite only (no Ray, no Flower processes).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/optimizer_overhead.py
	$(PY) benchmarks/server_overhead.py
	$(PY) benchmarks/simulation_overhead.py
	$(PY) benchmarks/population_scale.py
	$(PY) benchmarks/client_step.py

## Lint, formatting and types (CI runs this before the tests, from the same venv): ruff's
## rules and ruff's formatting over the tree, mypy over the packages (pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
