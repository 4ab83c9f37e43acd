# backup-catalog — see README.md. `make demo` and `make test` run `setup` first.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := pgbackrest stunnel4 lzop pv postgresql-15 postgresql-client-15 openssl python3-venv chromium wrk prometheus tmux

.PHONY: setup debs venv tools demo lint test test-fast docs docs-cli docs-settings bench bench-smoke clean

setup: debs venv tools

debs:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/backup-catalog: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/backup-catalog

# Real archiving tools (barman-cloud, WAL-E) in a venv on the system Python, outside /root,
# because archive_command runs as the postgres user (see FIELD-NOTES.md).
tools:
	@scripts/setup-tools.sh

demo: setup
	$(BIN)/backup-catalog demo

# Product packages checked by mypy --strict (executor/ and sandbox/ join when they exist).
PRODUCT := $(wildcard recovery catalog scheduler backup_catalog bench executor sandbox cf_undo)
# The fast lane: the pure core, the layout parsers, the catalog on a private PostgreSQL, the doctests.
FAST := tests/recovery tests/catalog $(wildcard tests/scheduler/test_layouts_*.py) recovery catalog scheduler

# Gates: ruff (rules in pyproject), mypy --strict, the layer contracts (import-linter, in pyproject).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy $(PRODUCT)
	$(BIN)/lint-imports

# The suite on TEST_WORKERS processes (pytest-xdist; each has its own catalog cluster and moto; the real
# archives are built once, under a lock, and shared). Most of its time is spent waiting on restores and
# servers, so more workers than cores pays; TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 3
test: setup lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
	$(MAKE) --no-print-directory bench-smoke

test-fast: venv lint
	$(BIN)/python -m pytest -q $(FAST)

bench: setup
	$(BIN)/python -m bench.run

# Every bench phase but the drills at tiny sizes, independent phases side by side (under a minute; part of
# `make test`): a broken bench fails here, not at the next measurement. Its figures mean nothing; results go
# to a temp file, never bench/results/.
bench-smoke: venv
	$(BIN)/python -m bench.run --smoke

# Refresh the tracked screenshots docs/coverage.png and docs/coverage-detail.png: the coverage page of a
# 10,000-instance catalog as `serve` answers it, in headless Chromium (`make test` never writes docs/).
docs: setup
	$(BIN)/python -m bench.docs

# Refresh docs/cli.md from the command line's parser (tests/test_cli_reference.py fails when it drifts).
docs-cli: venv
	$(BIN)/python -m backup_catalog.cli.reference > docs/cli.md

docs-settings: venv
	$(BIN)/python -m backup_catalog.settings.reference > docs/settings.md

clean:
	rm -rf $(VENV) .tools .cache
