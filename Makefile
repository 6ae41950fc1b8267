# Every target sets itself up: a fresh clone needs only python3 (>= 3.10) and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SOURCES := $(wildcard hiveloop_async tests benchmarks examples setup.py)
# The scope-level tests run a second time on the pure-Python hot path (no C extension).
PURE_TESTS := tests/test_track.py tests/test_generators.py tests/test_concurrency.py \
              tests/test_wire_shapes.py tests/test_manual_examples.py tests/test_queue.py \
              tests/test_speedups.py tests/test_public_api.py

.PHONY: help setup test lint typecheck unit demo serve bench bench-hot bench-breakdown bench-http bench-soak clean

help:
	@echo "make demo       start a local server, run the example agent, print its timelines"
	@echo "make test       lint, type-check and run the whole test suite"
	@echo "make bench      run the benchmarks against the peers (hiveloop 0.2.0, OpenTelemetry)"
	@echo "make bench-hot  per-block caller cost against the CPython floor"

# Reinstalled when the build inputs change: the editable install compiles the C extension.
$(STAMP): pyproject.toml setup.py hiveloop_async/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# A failed optional build must not leave an older extension in place (tests check it).
	rm -f hiveloop_async/_speedups.*.so
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

typecheck: $(STAMP)
	$(BIN)/mypy $(SOURCES)

unit: $(STAMP)
	$(BIN)/pytest
	HIVELOOP_ASYNC_PURE_PYTHON=1 $(BIN)/pytest -q $(PURE_TESTS)

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/python -m examples.demo

serve: $(STAMP)
	$(BIN)/hiveloop-async serve

bench-hot: $(STAMP)
	$(BIN)/python -m benchmarks.hot_path

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-breakdown: $(STAMP)
	$(BIN)/python -m benchmarks.breakdown

bench-http: $(STAMP)
	$(BIN)/python -m benchmarks.http_ceiling

bench-soak: $(STAMP)
	$(BIN)/python -m benchmarks.run --soak

clean:
	rm -rf $(VENV) benchmarks/.peers-venv
