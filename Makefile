# flwire — the one entry point. Every target uses the project's own .venv.
# `make demo` and `make test` work on a fresh machine: they install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flwire-installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install gen gen-check lint test unit bench demo clean

install: $(STAMP)

# Re-run pip only when pyproject.toml changes; torch (large) is installed once and reused.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

gen: install
	$(BIN)/python codegen/generate.py

gen-check: install
	$(BIN)/python codegen/generate.py --check

lint: install
	$(BIN)/ruff check python codegen tests benchmarks
	$(BIN)/ruff format --check python codegen tests benchmarks
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/mypy

test: install gen-check lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

demo: install
	$(BIN)/flwire demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build python/*.egg-info
