# `make run`: set up and start a worker (with beat) against Redis on localhost:6379.
# `make test`: set up and run lint, type checks and the test suite on a private redis-server.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint typecheck pytest soak bench clean

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null || ./scripts/install-redis.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	@redis-cli -u "$${JIDO_TASKS_REDIS_URL:-redis://localhost:6379/0}" ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --port 6379 --save "" --appendonly no
	$(BIN)/jido-tasks worker --beat

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
