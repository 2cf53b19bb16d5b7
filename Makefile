# Two set-up commands (README): `make demo` and `make test`. Each creates .venv,
# installs the CPU build of torch first (an unpinned torch can resolve to a
# multi-GB CUDA build), then this package with what the target needs, then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test lint docs test-arviz1 install-demo install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	touch $@

$(VENV)/.demo: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e ".[numpyro,arviz,bench]"
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e ".[numpyro,arviz,bench,test,dev,docs,distributed]"
	touch $@

install-demo: $(VENV)/.demo
install-test: $(VENV)/.test

demo: install-demo
	$(BIN)/pyro-mixup demo

test: install-test
	$(BIN)/python -m pytest -n 2 --dist worksteal -q pyro_mixup tests

# Development (CI runs both before `make test`): ruff lint + format check, mypy on the
# backend-neutral core; the Sphinx site with warnings as errors.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: install-test
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# ArviZ 1.x (xarray DataTree) needs Python >= 3.12: its own small venv (NumPyro side only;
# ArviZ 1.x has no Pyro converter) checks to_inference_data there. .ci/run runs it beside
# `make test` where such a Python exists; tests/test_arviz1.py runs it too once it is ready.
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3.1[2-9]) $(shell command -v python3.13 python3.12 2>/dev/null))
ARVIZ1 := .venv-arviz1

$(ARVIZ1)/.ready:
	@test -n "$(PY312)" || { echo "ArviZ 1.x needs Python >= 3.12, and none was found"; exit 1; }
	$(PY312) -m venv $(ARVIZ1)
	$(ARVIZ1)/bin/pip install -q 'arviz>=1' numpyro jax
	touch $@

test-arviz1: $(ARVIZ1)/.ready
	$(ARVIZ1)/bin/python tests/arviz1_check.py

clean:
	rm -rf $(VENV) $(ARVIZ1) build dist docs/_build *.egg-info
