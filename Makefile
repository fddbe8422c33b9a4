# The two commands: `make demo` and `make test`. Both create .venv on first use and reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export EHRMAMBA_HOME ?= $(CURDIR)/.ehrmamba
export DAGSTER_HOME ?= $(EHRMAMBA_HOME)/dagster
# the UI end-to-end test drives Debian's chromium (Playwright's own browser download is not used)
CHROMIUM ?= $(or $(EHRMAMBA_CHROMIUM),/usr/bin/chromium)

.PHONY: demo test setup setup-browser dagster-home lint format ui clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# Chromium for tests/test_ui_e2e.py: installed with apt when missing and running as root;
# otherwise nothing happens here and the test says how to install it.
setup-browser:
	@if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the UI end-to-end test"; \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || true; \
	fi

# the instance settings (DuckDB pool limit) go to a new DAGSTER_HOME; an existing one is kept
dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@test -f $(DAGSTER_HOME)/dagster.yaml || cp orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: setup dagster-home
	$(BIN)/dagster job execute -m orchestration.definitions -j ehrmamba_main

test: setup setup-browser
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check ehrmamba orchestration serving tests benchmarks
	$(BIN)/ruff format --check ehrmamba orchestration serving tests benchmarks

format: setup
	$(BIN)/ruff format ehrmamba orchestration serving tests benchmarks
	$(BIN)/ruff check --fix ehrmamba orchestration serving tests benchmarks

ui: setup dagster-home
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
