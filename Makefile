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

# Each test file runs on one worker (--dist loadfile), the files in this order: the longest first,
# so that no worker is left with a long end-to-end file after the other has finished.
SLOW_TESTS := $(addprefix tests/test_,stratify_stratdiff_runs.py stratify_stratdiff.py stratify_amortised.py \
	own_env.py report_tables.py resume_calql.py runner.py agents_losses.py edis_run.py faults.py)
TESTS := $(SLOW_TESTS) $(filter-out $(SLOW_TESTS),$(sort $(wildcard tests/test_*.py)))

test: $(STAMP)
	$(VENV)/bin/pytest -q -x -n auto --dist loadfile --no-loadscope-reorder --durations=15 $(TESTS)

quickstart: $(STAMP)
	$(VENV)/bin/stratdiff quickstart

bench: $(STAMP)
	$(VENV)/bin/stratdiff bench

clean-venv:
	rm -rf $(VENV)
