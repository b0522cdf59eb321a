# Resguardo: `make run` starts the whole system on embedded defaults; `make test` runs every test.
# Nothing here needs Docker or system services: NATS and PostgreSQL come from PyPI packages.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=


.PHONY: test-deps
.PHONY: setup run test lint typecheck bench schema docs clean
.PHONY: chaos

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

run: setup
	$(BIN)/resguardo up

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test-deps: setup
	bash scripts/test-deps.sh

test: setup lint typecheck test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	bash scripts/bench-deps.sh
	$(BIN)/python -m bench

# The system under kill -9 (resguardo/chaos.py): ONE JSON line of what was lost; exit 1 if any.
RECORDINGS ?= 20
KILLS ?= 30
SEED ?= 1
chaos: setup
	$(BIN)/python -m resguardo.chaos --recordings $(RECORDINGS) --kills $(KILLS) --seed $(SEED)

schema: setup
	$(BIN)/resguardo schema export build/schema

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

docs: setup
	$(BIN)/resguardo config --update-readme README.md
