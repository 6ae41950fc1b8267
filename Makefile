# Every target sets itself up: a fresh clone needs only python3 (>= 3.10) and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SOURCES := hiveloop_async tests benchmarks examples

.PHONY: help setup test lint typecheck unit demo serve bench bench-hot bench-breakdown bench-http bench-soak clean

help:
	@echo "make demo       start a local server, run the example agent, print its timelines"
	@echo "make test       lint, type-check and run the whole test suite"
	@echo "make bench      run the benchmarks against the peers (hiveloop 0.2.0, OpenTelemetry)"
	@echo "make bench-hot  per-block caller cost against the CPython floor"

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

# OTLP export end to end against Arize Phoenix, installed into .phoenix-venv on first use
# (about a minute) and started on 127.0.0.1; the OTLP decoding tests are part of `make test`.
.PHONY: test-otlp bench-otlp
test-otlp: $(STAMP)
	HIVELOOP_TEST_PHOENIX=1 $(BIN)/pytest -v -s -m phoenix tests/test_phoenix.py

# Sender CPU per event and events/s with OTLP on, next to the OpenTelemetry SDK.
bench-otlp: $(STAMP)
	$(BIN)/python -m benchmarks.otlp
