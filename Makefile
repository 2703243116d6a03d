# flwire — the one entry point. Every target uses the project's own .venv.
# `make demo` and `make test` work on a fresh machine: they install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flwire-installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_E2E ?= 1
E2E_ARGS ?=
LOAD_ARGS ?=

.PHONY: install gen gen-check lint test test-fast fuzz bench demo kafka-up kafka-down kafka-up-secure kafka-down-secure clean

install: $(STAMP)

# Re-run pip only when pyproject.toml changes; torch (large) is installed once and reused.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Python code from the schemas, and the Go and TypeScript conformance consumers'
# code (their staleness checks run in the test suite: tests/conformance/
# test_crosslang_go.py and test_crosslang_ts.py). npm ci runs only when the
# TypeScript consumer's node_modules is missing or older than its package-lock.json.
gen: install
	$(BIN)/python codegen/generate.py
	bash tests/crosslang/go/generate.sh
	cd tests/crosslang/ts && { test node_modules/.package-lock.json -nt package-lock.json || npm ci; } && npm run generate

gen-check: install
	$(BIN)/python codegen/generate.py --check

lint: install
	$(BIN)/ruff check python codegen tests benchmarks
	$(BIN)/ruff format --check python codegen tests benchmarks
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/buf breaking --against proto/flwire/v1/baseline.binpb
	$(BIN)/mypy

# The whole suite, against a real broker: started here and stopped afterwards, unless
# FLWIRE_KAFKA_BOOTSTRAP points at one that is already running.
test: install gen-check lint
	@if [ -z "$$FLWIRE_KAFKA_BOOTSTRAP" ]; then bash kafka/broker.sh up; fi; \
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ -z "$$FLWIRE_KAFKA_BOOTSTRAP" ]; then bash kafka/broker.sh down; fi; \
	exit $$status

# Everything but the broker tests (no Kafka needed).
test-fast: install
	$(BIN)/python -m pytest --ignore=tests/integration $(PYTEST_ARGS)

# The mutation fuzzer (tests/fuzz/README.md) for longer than the 20 s that `make test`
# gives it: FLWIRE_FUZZ_SECONDS (default 600) of fuzzing; FUZZ_ARGS adds options, e.g.
# FUZZ_ARGS="--seed 42 --keep-going --kind transfer". A failure prints its seed, its
# input file and the command that reproduces it.
fuzz: install
	cd tests && ../$(BIN)/python -m fuzz --seconds $${FLWIRE_FUZZ_SECONDS:-600} $(FUZZ_ARGS)

kafka-up: install
	bash kafka/broker.sh up

kafka-down:
	bash kafka/broker.sh down

# The secured broker (SASL_SSL + SCRAM-SHA-512, ACLs) on port 9094: kafka/README.md.
kafka-up-secure: install
	bash kafka/broker.sh up --secure

kafka-down-secure:
	bash kafka/broker.sh down --secure

# The codec benchmark (python -m benchmarks.codec, ~4 min), then the end-to-end run over a
# private Kafka broker on port 19192 (python -m benchmarks.e2e, ~1.5 min; BENCH_E2E=0 skips it;
# --quick in BENCH_ARGS reaches it, E2E_ARGS adds its own options, e.g.
# E2E_ARGS="--json bench-results/e2e.json"), then the many-clients load (python -m
# benchmarks.e2e.load: 128 clients in 4 processes into one server, against raw Kafka, ~1.5 min
# on 2 cores; --quick: 32 clients; LOAD_ARGS adds its own options), then streaming one model
# sender -> Kafka -> receiver against raw Kafka (python -m benchmarks.e2e.stream: 8 interleaved
# pairs quiet and 8 with one core kept busy, then a 5 GB bfloat16 model, ~6 min; --quick: a
# 41 MB model, 2 pairs; STREAM_ARGS adds its own options). All run from the repository root.
STREAM_ARGS ?= $(if $(filter --quick,$(BENCH_ARGS)),--quick --pairs 2,--loaded --big-bf16 5e9)
bench: install
	$(BIN)/python -m benchmarks.codec $(BENCH_ARGS)
	@if [ "$(BENCH_E2E)" != "0" ]; then \
		$(BIN)/python -m benchmarks.e2e $(filter --quick,$(BENCH_ARGS)) $(E2E_ARGS) && \
		$(BIN)/python -m benchmarks.e2e.load $(filter --quick,$(BENCH_ARGS)) $(LOAD_ARGS) && \
		$(BIN)/python -m benchmarks.e2e.stream $(STREAM_ARGS); \
	fi

demo: install
	$(BIN)/flwire demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build python/*.egg-info
