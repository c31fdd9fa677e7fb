# Thin wrappers over scripts. `make test` and `make demo` work on a fresh machine:
# they create .venv, install the project, and build or reuse the local control plane.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup tools node-images venv lint typecheck unit integration test demo bench kind-up kind-down images clean

setup: venv tools

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

tools:
	hack/build-tools.sh

# The four images the real node runs (operator, serving, MinIO, pause) as archives for
# containerd, built with buildah; rebuilt only where an input changed (about 0.2 s if none).
node-images: tools
	hack/buildah-images.sh

lint: venv tools
	$(VENV)/bin/ruff check operator serving tests benchmarks hack
	$(VENV)/bin/ruff format --check operator serving tests benchmarks hack
	shellcheck -x hack/*.sh .ci/run

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup node-images
	$(PY) -m pytest tests/integration tests/e2e $(PYTEST_ARGS)

test: setup lint typecheck unit integration

demo: setup node-images
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
