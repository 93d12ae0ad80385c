# MELLA: the two set-up commands are `make demo` and `make test` (see README).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# No model hub here or in CI: every model is a local folder (the tiny demo models) or already cached.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export DAGSTER_HOME ?= $(CURDIR)/.mella/dagster_home

.PHONY: install install-dev demo test ui lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/mella demo

ui: install
	$(BIN)/mella ui

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# Throughput next to same-run baselines; writes benchmarks/results/latest.{md,json}.
bench: install-dev
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .mella
