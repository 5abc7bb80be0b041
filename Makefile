# Everything runs inside ./.venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run demo test lint format typecheck bench schema-docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)          ## sync your Pipedrive account into ./pipedrive.duckdb (needs PIPEDRIVE_API_TOKEN)
	$(BIN)/pipedrive-sync run

demo: $(STAMP)         ## sync the bundled fake Pipedrive into ./demo.duckdb (no account needed)
	$(BIN)/pipedrive-sync demo

test: $(STAMP)         ## the whole offline test suite
	$(BIN)/pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)        ## throughput benchmark against the fake server (see README)
	$(BIN)/python -m pipelines.pipedrive_sync.bench $(BENCH_ARGS)

schema-docs: $(STAMP)  ## regenerate schemas/pipedrive.schema.yaml and docs/tables.md
	$(BIN)/python -m schemas.generate
	$(BIN)/pipedrive-sync docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
