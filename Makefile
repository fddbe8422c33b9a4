# The two commands: `make demo` and `make test`. Both create .venv on first use and reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export EHRMAMBA_HOME ?= $(CURDIR)/.ehrmamba
export DAGSTER_HOME ?= $(EHRMAMBA_HOME)/dagster

.PHONY: demo test setup lint format ui clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster job execute -m orchestration.definitions -j ehrmamba_main

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check ehrmamba orchestration serving tests benchmarks
	$(BIN)/ruff format --check ehrmamba orchestration serving tests benchmarks

format: setup
	$(BIN)/ruff format ehrmamba orchestration serving tests benchmarks
	$(BIN)/ruff check --fix ehrmamba orchestration serving tests benchmarks

ui: setup
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
