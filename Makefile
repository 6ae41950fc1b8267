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
.PHONY: browser-deps demo-web bench-dashboard

help:
	@echo "make demo       start a local server, run the example agent, print its timelines"
	@echo "make test       lint, type-check and run the whole test suite"
	@echo "make bench      run the benchmarks against the peers (hiveloop 0.2.0, OpenTelemetry)"
	@echo "make bench-hot  per-block caller cost against the CPython floor"
	@echo "make demo-web   the demo, then keep its server up to look at the dashboard (Ctrl-C)"
	@echo "make bench-dashboard  timeline of 10,000 nodes in Chromium, /v1/tasks at 100,000 tasks"

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

# The browser tests drive Debian's Chromium (Playwright cannot download its own build here).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium (apt-get) for the browser tests"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

unit: browser-deps

demo: $(STAMP)
	$(BIN)/python -m examples.demo

demo-web: $(STAMP)
	$(BIN)/python -m examples.demo --keep

bench-dashboard: $(STAMP) browser-deps
	$(BIN)/python -m benchmarks.dashboard

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
