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

# -- every claimed Python -------------------------------------------------------------------
# `make test-all-pythons` runs the whole suite on each CPython the package claims, each in its
# own virtual environment (.venv-3.10, ...) with its own build of the C extension (the ABI tag
# in the file name keeps the builds apart). Interpreters come from pyenv (`pyenv root`), else
# from PATH (python3.10, ...). `make test-python-3.13` runs one of them.
ALL_PYTHONS ?= 3.10 3.11 3.12 3.13
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
python_for = $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)))),python$(1))
so_for = hiveloop_async/_speedups.cpython-$(subst .,,$(1))-*.so

.PHONY: test-all-pythons clean-all-pythons $(addprefix test-python-,$(ALL_PYTHONS))

# Static pattern rules: explicit targets, so make neither skips them (phony) nor deletes the
# stamps as intermediate files.
$(foreach v,$(ALL_PYTHONS),.venv-$(v)/.installed-stamp): .venv-%/.installed-stamp: pyproject.toml setup.py hiveloop_async/_speedups.c
	$(call python_for,$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	rm -f $(call so_for,$*)
	.venv-$*/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

$(addprefix test-python-,$(ALL_PYTHONS)): test-python-%: .venv-%/.installed-stamp
	@# `make setup` removes every build of the extension; rebuild this version's if it is gone.
	@ls $(call so_for,$*) >/dev/null 2>&1 || .venv-$*/bin/python -m pip install --quiet --no-deps -e .
	@.venv-$*/bin/python -c 'import sys; print("== CPython", sys.version.split()[0])'
	.venv-$*/bin/pytest -q

test-all-pythons: $(addprefix test-python-,$(ALL_PYTHONS))

clean-all-pythons:
	rm -rf $(addprefix .venv-,$(ALL_PYTHONS))

# Sender-side costs of scrubbing, before_send and the disk spool (see benchmarks/safety.py).
.PHONY: bench-safety
bench-safety: $(STAMP)
	$(BIN)/python -m benchmarks.safety
