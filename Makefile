# esm: one entry point for developers and CI (DESIGN.md §2, rule 12).
#
#   make run     set up, then run esm against its embedded AWS emulator (config/example.yaml)
#   make test    set up, then every check and the whole test suite (what CI runs)
#   make check   the same as `make test` (set up if needed, lint, format check, type check, tests)
#   make lint    ruff fixes and formatting, in place
#   make bench   set up, then the benchmarks
#   make soak    set up, then the long reliability runs: the crash loop with 100 kills per source and
#                a 30-minute soak (SOAK_SECONDS=1800 CRASH_KILLS=100 change them); figures at the end
#   make kinesalite  install the Kinesis emulator the tests and benchmarks use (check and bench do it)
#   make clean   remove caches and build output; `make distclean` removes the virtual environment
#                and kinesalite too
#
# Only python3 (3.11+, with venv) is needed to run esm: `setup` creates $(VENV) and installs the
# package with its test extras, again whenever pyproject.toml changes. The tests and benchmarks
# also need Node.js and npm, for kinesalite: the Kinesis emulator that reshards correctly
# (../shared/TESTING.md), installed into $(KINESALITE_DIR) by `make kinesalite`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
CONFIG ?= config/example.yaml
# Extra pytest arguments, e.g. `make check PYTEST_ARGS='-k sqs -x'`.
PYTEST_ARGS ?=
# `make soak`: the soak's duration in seconds and the crash loop's kills (CI runs 120 s and 20 kills).
SOAK_SECONDS ?= 1800
CRASH_KILLS ?= 100

STAMP := $(VENV)/.esm-installed

# kinesalite lives in a project-local, git-ignored npm prefix; tests/conftest.py starts it from
# there. The stamp names the version, so changing KINESALITE_VERSION installs it again.
KINESALITE_VERSION := 3.3.3
KINESALITE_DIR := .kinesalite
KINESALITE_STAMP := $(KINESALITE_DIR)/.installed-$(KINESALITE_VERSION)

.PHONY: help setup kinesalite run check test lint bench soak clean distclean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The stamp is newer than pyproject.toml once the environment matches it. A failed install leaves
# no stamp, so the next run tries again.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

setup: $(STAMP) ## create the virtual environment and install esm with its test tools

# A failed install leaves no stamp, so the next run tries again.
$(KINESALITE_STAMP):
	@command -v npm >/dev/null || { \
		echo "make: npm not found: the tests and benchmarks need Node.js and npm for kinesalite" \
			"(Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm install --no-audit --no-fund --prefix $(KINESALITE_DIR) kinesalite@$(KINESALITE_VERSION)
	@touch $@

kinesalite: $(KINESALITE_STAMP) ## install kinesalite (Kinesis emulator for tests) into .kinesalite

run: setup ## run esm dev on config/example.yaml (embedded emulator + example handler)
	$(VENV)/bin/esm dev --config $(CONFIG)

# Every step runs even when an earlier one fails, so one CI run shows every problem; pytest runs
# last so that its summary line ends the output. The exit status is non-zero if any step failed.
check: setup kinesalite ## ruff, ruff format --check, mypy --strict, then pytest
	@status=0; \
	echo "+ ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "+ ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "+ mypy esm"; $(VENV)/bin/mypy esm || status=1; \
	if [ "$$status" -ne 0 ]; then echo "make check: lint or type errors above; running the tests anyway" >&2; fi; \
	echo "+ pytest $(PYTEST_ARGS)"; $(PY) -m pytest $(PYTEST_ARGS) || status=1; \
	exit "$$status"

test: check ## set up, then every check and the whole test suite; CI runs this

lint: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Extra benchmark arguments: `make bench BENCH_ARGS=--quick` or `BENCH_ARGS='kinesis scale'`.
BENCH_ARGS ?=
bench: setup kinesalite ## run the benchmarks (docs/benchmarks.md)
	$(PY) -m benchmarks $(BENCH_ARGS)

soak: setup kinesalite ## the crash loop (100 kills per source) and a 30-minute soak, with their figures
	ESM_SOAK_SECONDS=$(SOAK_SECONDS) ESM_CRASH_KILLS=$(CRASH_KILLS) $(PY) -m pytest \
		tests/reliability/test_crash_loop.py tests/reliability/test_soak.py $(PYTEST_ARGS)

clean: ## remove caches and build output (keeps the virtual environment)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist .bench
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf

distclean: clean ## also remove the virtual environment and kinesalite
	rm -rf $(VENV) $(KINESALITE_DIR)
