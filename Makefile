# `make run`: install the runtime dependencies only and run `jido-tasks up` (Redis, worker, beat,
# Flower, metrics/sessions server; a private redis-server when none answers on localhost:6379).
# `make test`: set up and run lint, type checks and the whole test suite (what CI runs).
# `make test-fast`: the inner loop: lint, types and the tests without chaos, the broker matrix,
# Redis Cluster and the slow fault tests (about 3 minutes here).
# `make test-floor`: the guarantee tests on the lowest dependency versions pyproject.toml allows,
# in a second venv (.venv-floor); CI runs it after `make test`.
PY ?= python3
VENV ?= .venv
FLOOR_VENV ?= .venv-floor
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: setup run test test-fast test-floor lint typecheck pytest soak bench clean

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

test-fast: lint typecheck
	$(BIN)/python -m pytest -q --fast $(PYTEST_ARGS)

$(FLOOR_VENV)/.installed: pyproject.toml scripts/floor.py
	@command -v redis-server >/dev/null || ./scripts/install-redis.sh
	test -x $(FLOOR_VENV)/bin/python || $(PY) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(PY) scripts/floor.py > $(FLOOR_VENV)/floor.txt
	$(FLOOR_VENV)/bin/python -m pip install -q -c $(FLOOR_VENV)/floor.txt -e ".[dev]"
	touch $(FLOOR_VENV)/.installed

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(celery|kombu|billiard|flower|redis|pydantic|pydantic.settings|click|tornado|prometheus.client) '
	$(FLOOR_VENV)/bin/python -m pytest -q -m guarantee $(PYTEST_ARGS)

soak: $(STAMP)
	$(BIN)/python -m pytest -q --soak $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .mypy_cache .ruff_cache .pytest_cache
