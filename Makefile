# Two commands on a fresh machine: `make quickstart` and `make test`.
# Each creates .venv/ on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python

.PHONY: quickstart test install bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,ray,wandb]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q -x -n auto --dist loadfile --durations=15 tests

quickstart: $(STAMP)
	$(VENV)/bin/stratdiff quickstart

bench: $(STAMP)
	$(VENV)/bin/stratdiff bench

clean-venv:
	rm -rf $(VENV)
