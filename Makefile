# `make run`: install the runtime dependencies only and run `jido-tasks up` (Redis, worker, beat,
# Flower, metrics/sessions server; a private redis-server when none answers on localhost:6379).
# `make test`: set up and run lint, type checks and the test suite on a private redis-server.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: setup run test lint typecheck pytest soak bench clean

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null || ./scripts/install-redis.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(RUN_STAMP): pyproject.toml
	@command -v redis-server >/dev/null || ./scripts/install-redis.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(RUN_STAMP)

setup: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/jido-tasks up $(UP_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check jido_tasks tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy jido_tasks

pytest: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

soak: $(STAMP)
	$(BIN)/python -m pytest -q --soak $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
