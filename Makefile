# One entry point for a fresh machine: every target bootstraps what it needs (uv included) and
# leaves the environment in .venv/ so that .venv/bin/interlinked works afterwards.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv comes from PATH when present, else from a private bootstrap venv (never from the lock).
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTEST_ARGS ?=
# Test modules run in parallel, one local stack per pytest-xdist worker (tests/conftest.py).
PYTEST_WORKERS ?= 2

.PHONY: install system-packages demo test lint lock lock-checkov checkov up down clean

install: $(BIN)/.installed

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

# Bytecode is compiled at install time: where PYTHONDONTWRITEBYTECODE is set (CI images, many
# containers) Python would otherwise compile every module from source in every process it starts.
$(BIN)/.installed: requirements.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 interlinked flows analyses blocks >/dev/null
	@touch $@

# Optional system packages (R for R script jobs) when this machine lets us install them.
system-packages:
	@bash scripts/system-packages.sh

demo: install system-packages
	$(BIN)/interlinked demo

# checkov lives in its own venv: its pins cannot share the project's lock.
CHECKOV_STAMP := .tools/checkov-venv/.lock.sha256

$(CHECKOV_STAMP): infra/checkov-requirements.lock infra/install-checkov.sh | $(UV)
	UV=$(UV) bash infra/install-checkov.sh

test: install $(CHECKOV_STAMP)
	@bash scripts/system-packages.sh test
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-pin every package with hashes (no download addresses are recorded).
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --no-header --python $(PYTHON) -o requirements.lock

lock-checkov: | $(UV)
	$(UV) pip compile infra/checkov-requirements.in --generate-hashes --no-header --python-version 3.11 -o infra/checkov-requirements.lock

checkov: $(CHECKOV_STAMP)
	.tools/checkov-venv/bin/checkov -d infra/terraform --framework terraform --skip-download --compact --quiet

up: install
	$(BIN)/interlinked up

down: install
	$(BIN)/interlinked down

clean:
	-$(BIN)/interlinked down
	rm -rf $(VENV) .tools .interlinked
