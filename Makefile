# Two entry points for a newcomer: `make demo` and `make test`. Both build .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extras: dev (tests, linters) and ray (compute targets on Ray, tested in make test).
# The CPU wheel of torch 2.13.0 lies on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# pytest-xdist workers for make test. Whole test files go to one worker (--dist loadfile), so a file's module
# fixtures (a Ray cluster, a served workspace) are built once; each worker has its own fork server.
PYTEST_WORKERS ?= 2

.PHONY: demo test test-all lint install clean bench-validate bench-load bench-train bench-ray bench-report bench-gpu

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,ray]" "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/chattune quickstart

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench-validate: $(STAMP)
	$(BIN)/python bench/validate_throughput.py

bench-load: $(STAMP)
	$(BIN)/python bench/serve_load.py

bench-train: $(STAMP)
	$(BIN)/python bench/train_throughput.py --quick

bench-ray: $(STAMP)
	$(BIN)/python bench/ray_overhead.py --quick

# docs/benchmarks.md's "Runs on record", regenerated from bench/results/*.json
bench-report:
	python3 bench/report.py

# on a machine with a CUDA GPU (bench/gpu_run.sh says what it installs)
bench-gpu:
	bench/gpu_run.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
