# kidney-node: `make run` starts the node on embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/kidney-node.yaml
# Which torch build: empty = what this machine's pip configuration gives (a plain PyPI
# gives the CUDA build, several GB); TORCH=cpu for the CPU build, TORCH=cu126 (or another
# CUDA tag of download.pytorch.org) for that CUDA build.
TORCH ?=
# Extra pip options, e.g. PIP_OPTS="--extra-index-url https://download.pytorch.org/whl/cu124"
PIP_OPTS ?=
ifneq ($(TORCH),)
PIP_OPTS += --extra-index-url https://download.pytorch.org/whl/$(TORCH)
endif
# The viewer the tests open results in: OHIF's prebuilt app from the npm registry.
OHIF_VERSION := 3.13.2
OHIF_SHA1 := 26a51ffcc1704c30fff403258a1d7392e9a991f3
OHIF_DIR := .cache/ohif-$(OHIF_VERSION)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test peers viewer run test lint bench clean image

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "kidney-node needs Python >= 3.11; '$(PYTHON)' is: $$($(PYTHON) --version 2>&1)." >&2; \
	  echo "Debian 12: apt-get install python3 python3-venv; Ubuntu 22.04: apt-get install" \
	    "python3.11 python3.11-venv, then: make PYTHON=python3.11 ..." >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "'$(PYTHON)' has no venv module: apt-get install python3-venv" \
	    "(or python3.X-venv for your version)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_OPTS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet $(PIP_OPTS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test peers viewer

# Debian packages the tests run against: DICOM peers and a headless browser (chromium).
# Only the missing ones are installed: a machine whose Node.js comes from elsewhere
# (NodeSource's nodejs ships npm) cannot also take Debian's npm package.
peers:
	@missing=""; \
	[ -x /usr/bin/storescu ] || missing="$$missing dcmtk"; \
	[ -x /usr/bin/dciodvfy ] || missing="$$missing dicom3tools"; \
	[ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages the tests run against:$$missing" \
	    "(DICOM peers: dcmtk, dicom3tools, orthanc; a browser for OHIF: chromium, npm)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    $$missing; \
	fi

# OHIF Viewer (static build, `dist/`), checked against the registry's SHA-1, for tests/viewer.
viewer: $(OHIF_DIR)/dist/index.html

$(OHIF_DIR)/dist/index.html:
	@echo "fetching OHIF Viewer $(OHIF_VERSION) (@ohif/app, npm registry) into $(OHIF_DIR)"
	rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR)
	cd $(OHIF_DIR) && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null \
	  && echo "$(OHIF_SHA1)  ohif-app-$(OHIF_VERSION).tgz" | sha1sum -c --quiet \
	  && tar xzf ohif-app-$(OHIF_VERSION).tgz --strip-components=1 package/dist \
	  && rm ohif-app-$(OHIF_VERSION).tgz
	touch $@

run: install
	$(BIN)/kidney-node --config $(CONFIG) serve

lint: install-test
	$(BIN)/ruff check service models tests benchmarks migrations/env.py

test: install-test lint
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) var .pytest_cache .cache

# The container image, built from the Dockerfile and checked from outside, here where no
# registry is reachable (docker/build-local.sh; root): Debian's buildah and debootstrap
# build it, podman, runc and slirp4netns run it for benchmarks/image_check.py.
IMAGE_WORK ?= /var/tmp/kidney-node-image
image: install
	@missing=""; \
	for tool in buildah debootstrap podman runc slirp4netns; do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages that build and run the image:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y --no-install-recommends $$missing uidmap; fi
	$(SUDO) TORCH="$(TORCH)" docker/build-local.sh $(IMAGE_WORK)
	$(SUDO) $(BIN)/python -m benchmarks.image_check \
	  --build-seconds "$$(cat $(IMAGE_WORK)/build-seconds)"
