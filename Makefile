# Quick start: `make bench` (install + run the fusion ablation on the CPU), `make test`,
# `make lint`.
SHELL := /bin/bash
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
SUITE ?= suites/fusion_ablation.yaml
PYTEST_ARGS ?=
# two single-threaded workers use a 2-core CPU better than one cell on two threads
BENCH_ARGS ?= --workers 2

# Use the active virtual environment if there is one, else create and use .venv.
ifdef VIRTUAL_ENV
PY := $(VIRTUAL_ENV)/bin/python
else
PY := .venv/bin/python
endif

.PHONY: install install-test bench test lint kernels-bench clean

$(PY):
	$(PYTHON) -m venv .venv

# torch is pinned and installed first: an unpinned torch on a machine without one would pull
# the CUDA build; with the pinned CPU wheel installed, the project's range is already satisfied.
install: $(PY)
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e .

install-test: install
	$(PY) -m pip install -q -e '.[test]'

bench: install
	$(PY) run_bench.py $(SUITE) $(BENCH_ARGS)

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, configured in pyproject.toml ([tool.ruff]); CI runs it before the tests
lint: install-test
	$(PY) -m ruff check .

# pytest-benchmark kernel timings (not part of `make test`)
kernels-bench: install-test
	$(PY) -m pytest tests/benchmarks --benchmark-enable --benchmark-only \
		--benchmark-json=reports/scan_kernels/pytest-benchmark.json

clean:
	rm -rf .venv build *.egg-info
