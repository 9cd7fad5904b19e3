# The team's vocabulary: `make run`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-postgres test-fault test-browser lint typecheck bench install clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

## Everything on one machine: embedded Redis, daphne on :8000, a Celery worker and beat.
run: $(STAMP)
	$(BIN)/python manage.py runstack

## The whole suite against embedded Redis and SQLite (browser tests run as their own pytest run).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not browser and not postgres" -q
	$(BIN)/python -m pytest -m browser -q || [ $$? -eq 5 ]  # 5: no browser tests collected

## The suite again on PostgreSQL (row locks, real races) and a Redis server, as production runs.
test-postgres: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/8} \
	$(BIN)/python -m pytest -m "not browser and not fault" -q -p no:cacheprovider

test-fault: $(STAMP)
	$(BIN)/python -m pytest -m fault -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy flows conversations botsite

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(SOAK),--soak $(SOAK),)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
