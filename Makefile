# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment in .venv (torch pinned to the local CPU build) when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pytest-xdist workers; tests of one module share a worker (their module fixtures build runs once)
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

.PHONY: install demo test test-fast bench lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sparsebert pipeline -m experiment=demo
	$(VENV)/bin/sparsebert report runs/pipeline/multirun/demo
	$(VENV)/bin/sparsebert report --figures latest
	$(VENV)/bin/sparsebert report --patterns 128 --out-dir runs/figures

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments
	$(VENV)/bin/ruff format --check src tests benchmarks experiments

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks experiments
	$(VENV)/bin/ruff format src tests benchmarks experiments

clean:
	rm -rf runs multirun outputs .cache wandb .pytest_cache
