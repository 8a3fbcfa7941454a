# segment-anywhere developer commands. `make serve` and `make test` work on a fresh machine
# with python3 (3.10+); everything else they need is installed into .venv.

PYTHON ?= python3
VENV ?= .venv
PORT ?= 3000
# Optional: a PyTorch index for CPU-only wheels (much smaller than PyPI's CUDA build), e.g.
#   make serve TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.segany-installed

.PHONY: install serve test browser test-slow test-oci test-registry test-browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX_URL),$(BIN)/python -m pip install --quiet torch torchvision --index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Serve the tiny model on $(PORT) (offline; set SEGANY_MODEL=vit_h for the real one).
serve: $(STAMP)
	SEGANY_MODEL=$${SEGANY_MODEL:-tiny} $(BIN)/bentoml serve service:SegmentAnything --port $(PORT)

## The CI suite: everything but the slow, OCI and registry tests (the browser tests included: chromium installed first).
test: $(STAMP) browser
	$(BIN)/python -m pytest

## Debian's chromium for the browser tests (Playwright drives the system browser; no download).
## Without root or apt-get they are skipped, except under CI=true, where they fail.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$SEGANY_CHROMIUM" ] || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
		echo "no chromium (apt-get install chromium needs root): the browser tests will be skipped"

## vit_b-shaped equality tests (minutes on CPU).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

## Build the CPU image (tiny weights baked) with buildah and run it against both contracts
## (needs root, buildah, skopeo, umoci, debootstrap when no registry serves python:3.11-slim; ~25 GB disk).
test-oci: $(STAMP)
	$(BIN)/python -m pytest -m oci -v

## Push small images to a local docker-registry: only missing layers are sent (deploy/registry.py;
## installs skopeo and docker-registry with apt-get when missing, which needs root).
test-registry: $(STAMP)
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q skopeo docker-registry; }
	$(BIN)/python -m pytest -m registry -v

## The web page in headless Chromium (tests/test_web_ui.py): installs playwright into .venv and
## Debian's chromium with apt-get (root) when missing; Playwright drives the system browser, no download.
test-browser: $(STAMP) browser
	$(BIN)/python -m pytest -m browser -v

## All benchmark suites; results in bench/results/, table in README.md.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) .cache build dist *.egg-info
