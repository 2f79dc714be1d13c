# Two entry points do all the setup on a fresh machine:  `make book`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The shared JPEG copy of CIFAR-10 when it sits beside the repo, else the official download.
DATA   ?= $(if $(wildcard ../shared/data/cifar10-jpeg.zip),../shared/data/cifar10-jpeg.zip,cifar10)

.PHONY: venv test lint train bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check erav1 scripts tests

train: venv
	$(VENV)/bin/erav1 train --data $(DATA) --run-dir runs/resnet18 --epochs 20

bench: venv
	$(PY) scripts/bench_train.py --data $(DATA)

clean:
	rm -rf $(VENV) _build .pytest_cache .ruff_cache
