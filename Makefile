# The two set-up commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export QLORA_HOME ?= $(CURDIR)/.qlora
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast bench ui clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, and only where none is importable: 2.13.0 is a CPU build on the project's build machines.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install  ## the whole pipeline on the embedded default; prints the eval table and model_uri
	$(BIN)/python -m pipelines.run configs/demo.yaml

test: install  ## the full test suite (unit, asset, end-to-end)
	$(BIN)/pytest

test-fast: install  ## everything but the end-to-end runs
	$(BIN)/pytest -m "not slow"

bench: install  ## the CPU benchmarks (about 15 minutes on 2 cores) into BENCHMARKS.md and benchmarks/results.json; BENCH="a b" runs some
	$(BIN)/python -c "import tabulate, matplotlib" 2>/dev/null || $(BIN)/pip install -e ".[bench]"
	$(BIN)/python -m benchmarks $(BENCH)

ui: install  ## the Dagster UI on http://127.0.0.1:3000, sharing runs with `make demo`
	DAGSTER_HOME=$${DAGSTER_HOME:-$(QLORA_HOME)/dagster} $(BIN)/python -c "from pipelines.instance import get_instance; get_instance()"
	DAGSTER_HOME=$${DAGSTER_HOME:-$(QLORA_HOME)/dagster} $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:  ## remove the data home (artifacts, MLflow registry, Dagster runs)
	rm -rf $(QLORA_HOME)
