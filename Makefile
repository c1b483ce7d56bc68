# journeylake: every target does its own set-up on a fresh machine.
#   make test   venv + jars, then pytest        make demo   venv + jars, then `journeylake demo`
#   make test-fast  the tests that start no Spark (seconds, for the edit-test loop)
#   make bench  venv + jars, then bench/*.py     make lint   ruff check + format check + mypy
#   make fuzz   the fuzzing suite (tests/fuzz) with many more examples than make test runs
#   make venv   (re)install only when pyproject.toml changed
#   make jars   resolve JVM jars once into .cache/jars (no-op when done)
#   make redis  install redis-server (the online store) from the OS packages when missing
#   make chromium  install Debian's chromium (the Data Docs test's headless browser) when missing
#   make clean  remove venv, jar cache and local state (.journeylake/)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
JARS_STAMP := .cache/jars/manifest.json
PIP_QUIET := --quiet --disable-pip-version-check --no-input
PYTEST_ARGS ?=

.PHONY: venv jars redis chromium test test-fast fuzz demo bench lint format clean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@echo "venv: installing journeylake[dev] into $(VENV) ..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@PYTHONWARNINGS=ignore $(PY) -m pip install $(PIP_QUIET) -e '.[dev]'  # setuptools' editable-mode notices are noise
	@touch $@
	@echo "venv: ready"

jars: $(JARS_STAMP)

$(JARS_STAMP): conf/jvm/pom.xml conf/jvm/kafka-broker.pom.xml conf/jvm/data-docs.pom.xml $(VENV_STAMP)
	@$(PY) -m pipelines.services.jars

# The online store runs the OS's redis-server (no Python wheel ships one): installed here with
# apt-get when this is root on a Debian/Ubuntu machine, else the exact package to install is named.
redis:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "redis: installing redis-server with apt-get ..."; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q redis-server >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; } \
			|| { echo "redis: apt-get install redis-server failed" >&2; exit 1; }; \
		command -v redis-server >/dev/null || { echo "redis: redis-server still not on PATH" >&2; exit 1; }; \
		echo "redis: $$(redis-server --version)"; \
	else \
		echo "redis: redis-server is missing (the online store runs it). Install it, then rerun make:" >&2; \
		echo "  Debian/Ubuntu: sudo apt-get install redis-server" >&2; \
		echo "  macOS:         brew install redis" >&2; \
		exit 1; \
	fi

# Tests open the Data Docs in a real headless browser: Debian's chromium, installed the same way
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: installing chromium with apt-get (the Data Docs test's headless browser) ..."; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
			|| { echo "chromium: apt-get install chromium failed" >&2; exit 1; }; \
		command -v chromium >/dev/null || { echo "chromium: chromium still not on PATH" >&2; exit 1; }; \
	else \
		echo "chromium: chromium is missing (a test opens the Data Docs in it). Install it, then rerun make:" >&2; \
		echo "  Debian/Ubuntu: sudo apt-get install chromium" >&2; \
		exit 1; \
	fi

test: venv jars redis chromium
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# tests/fuzz with the long example counts (make test runs a few of each): tens of minutes
fuzz: venv jars redis
	JOURNEYLAKE_FUZZ=long $(VENV)/bin/pytest tests/fuzz $(PYTEST_ARGS)

# "slow" = starts Spark (tests/conftest.py marks every test that uses the spark fixture) or a
# long-running local service; the rest runs in seconds. jars: the Data Docs test copies the
# WebJars' scripts into the site (resolved with the JVM jars, once).
test-fast: venv jars redis
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

demo: venv jars redis
	$(VENV)/bin/journeylake demo

bench: venv jars
	@set -e; found=0; for script in bench/bench_*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; $(PY) "$$script"; \
	done; [ $$found = 1 ] || echo "bench: no bench/bench_*.py yet"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	@if [ -x $(PY) ]; then $(PY) -m pipelines.cli.metastore stop >/dev/null 2>&1 || true; fi
	@if [ -x $(PY) ]; then $(PY) -m pipelines.cli online-store down >/dev/null 2>&1 || true; fi
	rm -rf $(VENV) .cache .journeylake .pytest_cache .ruff_cache .mypy_cache *.egg-info
