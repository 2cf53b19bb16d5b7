# Two set-up commands (README): `make demo` and `make test`. Each creates .venv,
# installs the CPU build of torch first (an unpinned torch can resolve to a
# multi-GB CUDA build), then this package with what the target needs, then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test install-demo install-test clean

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
	$(BIN)/pip install -q -e ".[numpyro,arviz,bench,test]"
	touch $@

install-demo: $(VENV)/.demo
install-test: $(VENV)/.test

demo: install-demo
	$(BIN)/pyro-mixup demo

test: install-test
	$(BIN)/python -m pytest -n 2 -q pyro_mixup tests

clean:
	rm -rf $(VENV) build *.egg-info
