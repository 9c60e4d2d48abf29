# Set-up and entry points. Each target creates .venv and installs the project if needed.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.mgc-installed
DEMO   ?= demo

.PHONY: install test lint format demo bench clean

install: $(STAMP)

# torch is installed first at the CPU build found on local disk, so that no dependency pulls a
# CUDA build; on machines with a GPU, install the torch matching your CUDA before `make`.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install -q -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import mgc, ray, torch, soundfile, librosa"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest --durations=25 tests

# ruff's lint and format checks, as CI runs them; `make format` rewrites what the check flags.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `make demo ARGS=--fresh` starts again; a plain re-run reuses finished stages.
demo: $(STAMP)
	$(BIN)/mgc demo --workdir $(DEMO) $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/extract.py

clean:
	rm -rf $(VENV) $(DEMO)
