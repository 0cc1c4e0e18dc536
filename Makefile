# kidney-node: `make run` starts the node on embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/kidney-node.yaml
# Extra pip options, e.g. PIP_OPTS="--extra-index-url https://download.pytorch.org/whl/cu124"
PIP_OPTS ?=
DEBIAN_PEERS := dcmtk dicom3tools orthanc chromium openssl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test peers run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_OPTS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet $(PIP_OPTS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test peers

# Debian packages the tests run against: DICOM peers and a headless browser (chromium).
peers:
	@if ! command -v /usr/bin/storescu >/dev/null || ! command -v /usr/bin/dciodvfy >/dev/null \
	    || ! command -v /usr/sbin/Orthanc >/dev/null || ! command -v /usr/bin/chromium >/dev/null \
	    || ! command -v /usr/bin/openssl >/dev/null; then \
	  echo "installing Debian packages: $(DEBIAN_PEERS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    $(DEBIAN_PEERS); \
	fi

run: install
	$(BIN)/kidney-node --config $(CONFIG) serve

lint: install-test
	$(BIN)/ruff check service models tests benchmarks migrations/env.py

test: install-test lint
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) var .pytest_cache
