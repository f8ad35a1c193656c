# lnflow developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo
DEMO_SECONDS ?= 30
POLICY_DEMO_SECONDS ?= 45

.PHONY: help install protos lint typecheck test check demo demo-policy bench clean prometheus-tools postgresql-server

help:
	@echo "make demo    - simulated node + daemon for $(DEMO_SECONDS) s, then the opportunities table"
	@echo "make demo-policy - failures, plan, apply, fewer failures, measured effects ($(POLICY_DEMO_SECONDS) s a phase)"
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

# promtool and prometheus for tests/test_metrics.py, from Debian's prometheus package
# when they are missing and apt-get can install them (root). Without them the tests
# that need them are skipped, except under CI=true, where they fail.
prometheus-tools:
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's prometheus package (promtool, prometheus) for the metrics tests"; \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends prometheus >/dev/null ) \
		|| { echo "apt-get could not install prometheus"; [ "$$CI" != true ]; }; \
	else \
		echo "promtool/prometheus missing and apt-get unusable: tests/test_metrics.py skips"; \
		echo "  test_contrib_rules_pass_promtool, test_each_alert_fires_on_its_condition_only,"; \
		echo "  test_a_real_prometheus_scrapes_lnflowd and the promtool lint at the end of"; \
		echo "  test_every_family_equals_the_store_and_survives_a_restart"; \
		[ "$$CI" != true ]; \
	fi

# initdb and pg_ctl for the store tests on PostgreSQL (tests/pgserver.py starts a
# throwaway cluster per test process), from Debian's postgresql package when they are
# missing and apt-get can install it (root). Without them the PostgreSQL runs skip,
# except under CI=true, where they fail.
postgresql-server:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's postgresql package (initdb, pg_ctl) for the PostgreSQL store tests"; \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends postgresql >/dev/null ) \
		|| { echo "apt-get could not install postgresql"; [ "$$CI" != true ]; }; \
	else \
		echo "initdb/pg_ctl missing and apt-get unusable: the [postgresql] runs of"; \
		echo "  tests/test_pg_store.py, test_ingest.py and test_analysis_queries.py skip"; \
		[ "$$CI" != true ]; \
	fi

# Four workers on two cores: most end-to-end time is waiting on outages, timeouts and
# the simulated node, not CPU. Tests marked xdist_group("<name>") share one worker.
# `pytest -m "not e2e"` runs the in-process tests alone, in seconds.
PYTEST_WORKERS ?= 4

test: lint typecheck prometheus-tools postgresql-server
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=25

check: test

demo: install
	@bash tools/demo.sh "$(BIN)" "$(DEMO)" "$(DEMO_SECONDS)"

demo-policy: install
	@bash tools/demo_policy.sh "$(BIN)" "$(DEMO)" "$(POLICY_DEMO_SECONDS)"

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache .ruff_cache build dist
