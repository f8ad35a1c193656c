# lnflow developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo
DEMO_SECONDS ?= 30

.PHONY: help install protos lint typecheck test check demo bench clean

help:
	@echo "make demo    - simulated node + daemon for $(DEMO_SECONDS) s, then the opportunities table"
	@echo "make test    - ruff (lint + format), mypy, pytest"
	@echo "make protos  - regenerate lnflow/lnd/_proto from protos/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

protos: install
	$(BIN)/python tools/gen_protos.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

check: test

demo: install
	@bash tools/demo.sh "$(BIN)" "$(DEMO)" "$(DEMO_SECONDS)"

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache .ruff_cache build dist
