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

UI_PORT ?= 3000
ui: install  ## the Dagster UI on http://127.0.0.1:3000 (UI_PORT=...), sharing runs with `make demo`; Ctrl-C stops it
	DAGSTER_HOME=$${DAGSTER_HOME:-$(QLORA_HOME)/dagster} $(BIN)/python -c "from pipelines.instance import get_instance; get_instance()"
	@# exec: dagster dev takes the shell's place, so the SIGTERM make forwards on `kill` reaches it; without it
	@# the shell died alone and dagster dev, its webserver, daemon and code servers kept running.
	DAGSTER_HOME=$${DAGSTER_HOME:-$(QLORA_HOME)/dagster} exec $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

clean:  ## remove the data home (artifacts, MLflow registry, Dagster runs)
	rm -rf $(QLORA_HOME)
