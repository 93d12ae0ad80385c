# MELLA: the two set-up commands are `make demo` and `make test` (see README).
PYTHON ?= python3.11
# bash with pipefail: a failing pip install fails the target even though its output goes through grep.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# No model hub here or in CI: every model is a local folder (the tiny demo models) or already cached.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export DAGSTER_HOME ?= $(CURDIR)/.mella/dagster_home

.PHONY: install install-dev demo test ui lint format bench clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exact versions from requirements.lock (pip constraints), the package's own ranges in pyproject.toml. pip prints
# one line per package it collects, so a first install (≈ 3-5 min, ≈ 2.5 GB) is never silent.
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check --progress-bar off -c requirements.lock

$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	@echo "Installing MELLA with its models extra from requirements.lock (first time ≈ 3-5 min) ..."
	$(PIP_INSTALL) -e '.[models]' | { grep -E '^(Collecting|Successfully)' || true; }
	touch $@

$(VENV)/.installed-dev: pyproject.toml requirements.lock $(VENV)/.installed
	@echo "Installing the dev extras (tests, lint, deploy, Kubernetes, TRL) from requirements.lock ..."
	$(PIP_INSTALL) -e '.[dev]' | { grep -E '^(Collecting|Successfully)' || true; }
	touch $@

# Re-resolve requirements.lock from pyproject.toml's ranges, keeping today's pins where they still fit
# (`make lock LOCK_ARGS=--upgrade` takes the newest allowed versions).
lock: install-dev
	$(BIN)/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
		--unsafe-package mella --unsafe-package pip --unsafe-package setuptools $(LOCK_ARGS) \
		-o requirements.lock pyproject.toml

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/mella demo

# The UI's port: make ui UI_PORT=3001
UI_PORT ?= 3000
ui: install
	$(BIN)/mella ui --port $(UI_PORT)

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
