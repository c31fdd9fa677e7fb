# Thin wrappers over scripts. `make test` and `make demo` work on a fresh machine:
# they create .venv, install the project, and build or reuse the local control plane.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup tools venv lint typecheck unit integration test demo bench kind-up kind-down images clean

setup: venv tools

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

tools:
	hack/build-tools.sh

lint: venv tools
	$(VENV)/bin/ruff check operator serving tests benchmarks hack
	$(VENV)/bin/ruff format --check operator serving tests benchmarks hack
	shellcheck -x hack/*.sh .ci/run

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration tests/e2e $(PYTEST_ARGS)

test: setup lint typecheck unit integration

demo: setup
	$(PY) -m mlmodel_operator.demo

bench: setup
	$(PY) benchmarks/run.py

kind-up:
	hack/kind-up.sh

kind-down:
	hack/kind-down.sh

images:
	hack/images.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
