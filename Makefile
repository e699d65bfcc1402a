# MAPLE: `make demo` runs the smoke grid end to end; `make test` runs the whole test suite.
# Both create .venv when missing and install the project (scripts/bootstrap.py chooses torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/smoke

.PHONY: setup demo test dry-run-paper clean

setup:
	$(PYTHON) scripts/bootstrap.py $(VENV)

demo: setup
	$(PY) -m maple_utils.grid run params/smoke.yaml --out $(OUT)

test: setup
	$(PY) -m pytest

dry-run-paper: setup
	$(PY) -m maple_utils.grid run params/paper.yaml --out runs/paper --dry-run

clean:
	rm -rf runs/smoke runs/notebooks .cache/maple
