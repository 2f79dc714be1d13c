# Two entry points do all the setup on a fresh machine:  `make book`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# `cifar10` means the official CIFAR-10 pixels. Offline, the lossless PNG copy beside the repository stands in
# for torchvision's download (erav1 checks its fingerprint); without it, `cifar10` downloads the official release.
ERAV1_CIFAR10 ?= $(abspath $(wildcard ../shared/data/cifar10-png.zip))
export ERAV1_CIFAR10
DATA   ?= cifar10

.PHONY: venv browser test lint train bench book smoke-book book-html stamp clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The book's browser tests use Debian's Chromium and its driver; install them once if missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: venv browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

train: venv
	$(VENV)/bin/erav1 train --data $(DATA) --run-dir runs/resnet18 --epochs 20

bench: venv
	$(PY) scripts/bench_train.py --data $(DATA)

# The book. `make book` trains for 20 epochs (the full profile: the chapters as stored, on `cifar10`), writes
# the executed chapters into book/ and builds _build/html. `make smoke-book` runs every chapter on a small
# subset, one epoch on the CPU, and builds build/book-smoke/_build/html; it never touches book/.
book: venv
	$(VENV)/bin/erav1 book --profile full

smoke-book: venv
	$(VENV)/bin/erav1 book --profile smoke

# Build the site from the committed chapters as they are (what the publishing workflow runs).
book-html: venv
	$(VENV)/bin/erav1 book --build-only

# Re-stamp every chapter's Colab badge and install cell from _config.yml.
stamp: venv
	$(PY) scripts/stamp_chapters.py

clean:
	rm -rf $(VENV) _build build .pytest_cache .ruff_cache
