# journeylake: every target does its own set-up on a fresh machine.
#   make test   venv + jars, then pytest        make demo   venv + jars, then `journeylake demo`
#   make bench  venv + jars, then bench/*.py     make lint   ruff check + format check
#   make venv   (re)install only when pyproject.toml changed
#   make jars   resolve JVM jars once into .cache/jars (no-op when done)
#   make clean  remove venv, jar cache and local state (.journeylake/)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
JARS_STAMP := .cache/jars/manifest.json
PIP_QUIET := --quiet --disable-pip-version-check --no-input
PYTEST_ARGS ?=

.PHONY: venv jars test demo bench lint format clean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@echo "venv: installing journeylake[dev] into $(VENV) ..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@PYTHONWARNINGS=ignore $(PY) -m pip install $(PIP_QUIET) -e '.[dev]'  # setuptools' editable-mode notices are noise
	@touch $@
	@echo "venv: ready"

jars: $(JARS_STAMP)

$(JARS_STAMP): conf/jvm/pom.xml conf/jvm/kafka-broker.pom.xml $(VENV_STAMP)
	@$(PY) -m pipelines.services.jars

test: venv jars
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: venv jars
	$(VENV)/bin/journeylake demo

bench: venv jars
	@set -e; found=0; for script in bench/bench_*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; $(PY) "$$script"; \
	done; [ $$found = 1 ] || echo "bench: no bench/bench_*.py yet"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	@if [ -x $(PY) ]; then $(PY) -m pipelines.cli.metastore stop >/dev/null 2>&1 || true; fi
	rm -rf $(VENV) .cache .journeylake .pytest_cache .ruff_cache *.egg-info
