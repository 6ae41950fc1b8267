# Every target sets itself up: a fresh clone needs only python3 (>= 3.10) and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SOURCES := hiveloop_async tests benchmarks examples

.PHONY: help setup test lint typecheck unit demo serve bench bench-hot bench-breakdown bench-http bench-soak clean
.PHONY: browser-deps demo-web bench-dashboard

help:
	@echo "make demo       start a local server, run the example agent, print its timelines"
	@echo "make test       lint, type-check and run the whole test suite"
	@echo "make bench      run the benchmarks against the peers (hiveloop 0.2.0, OpenTelemetry)"
	@echo "make bench-hot  per-block caller cost against the CPython floor"
	@echo "make demo-web   the demo, then keep its server up to look at the dashboard (Ctrl-C)"
	@echo "make bench-dashboard  timeline of 10,000 nodes in Chromium, /v1/tasks at 100,000 tasks"

# Reinstalled when the package's metadata changes (pure Python: no compiler needed).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
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
	rm -rf $(VENV) benchmarks/.peers-venv benchmarks/.llm-peers-venv

# OTLP export end to end against Arize Phoenix, installed into .phoenix-venv on first use
# (about a minute) and started on 127.0.0.1; the OTLP decoding tests are part of `make test`.
.PHONY: test-otlp bench-otlp
test-otlp: $(STAMP)
	HIVELOOP_TEST_PHOENIX=1 $(BIN)/pytest -v -s -m phoenix tests/test_phoenix.py

# Sender CPU per event and events/s with OTLP on, next to the OpenTelemetry SDK, interleaved
# rounds. BENCH_OTLP_BASELINE=<git ref> adds that commit's package as base-otlp/base-ingest.
bench-otlp: $(STAMP)
	$(BIN)/python -m benchmarks.otlp

# -- every claimed Python -------------------------------------------------------------------
# `make test-all-pythons` runs the whole suite on each CPython the package claims, each in its
# own virtual environment (.venv-3.10, ...). Interpreters come from pyenv (`pyenv root`), else
# from PATH (python3.10, ...). `make test-python-3.13` runs one of them.
ALL_PYTHONS ?= 3.10 3.11 3.12 3.13
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
python_for = $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)))),python$(1))

.PHONY: test-all-pythons clean-all-pythons $(addprefix test-python-,$(ALL_PYTHONS))

# Static pattern rules: explicit targets, so make neither skips them (phony) nor deletes the
# stamps as intermediate files.
$(foreach v,$(ALL_PYTHONS),.venv-$(v)/.installed-stamp): .venv-%/.installed-stamp: pyproject.toml
	$(call python_for,$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

$(addprefix test-python-,$(ALL_PYTHONS)): test-python-%: .venv-%/.installed-stamp
	@.venv-$*/bin/python -c 'import sys; print("== CPython", sys.version.split()[0])'
	.venv-$*/bin/pytest -q

test-all-pythons: $(addprefix test-python-,$(ALL_PYTHONS))

clean-all-pythons:
	rm -rf $(addprefix .venv-,$(ALL_PYTHONS))

# Sender-side costs of scrubbing, before_send and the disk spool (see benchmarks/safety.py).
.PHONY: bench-safety
bench-safety: $(STAMP)
	$(BIN)/python -m benchmarks.safety

.PHONY: bench-llm bench-web
# Added CPU per OpenAI call of contrib.openai.instrument, Langfuse's langfuse.openai and
# LangSmith's wrap_openai vs a bare client in the same process (blocks of calls alternated,
# per-thread CPU clocks, each block ending with its SDK's flush), sync and async, plain and
# 50-chunk streams, on the fake server, each peer exporting to the local sink (counted);
# `--method process` is the earlier whole-process method. Peers go into benchmarks/.llm-peers-venv on first
# use (about a minute); `python -m benchmarks.llm --skip-peers` runs bare and ours only.
bench-llm: $(STAMP)
	$(BIN)/python -m benchmarks.llm

# Per-request CPU that our FastAPI/aiohttp middlewares and client hooks add, next to
# OpenTelemetry's instrumentations (installed from the `bench` extra into .venv on first use).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

# Every row with a server process per configuration, then the server rows with --method ab:
# one server process per family, blocks of requests alternated between its apps.
bench-web: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.web
	$(BIN)/python -m benchmarks.web --method ab
