"""A fully cached rerun of the headless runner imports no ML library and no MLflow: the registration's cache hit and
the champion check are read from the embedded sqlite registry (issue 12, figure 5)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from tests.run_configs import tiny_run_config
from tests.test_light_imports import HEAVY

pytestmark = pytest.mark.slow
STEPS = ("training_dataset", "quantized_base_model", "qlora_adapter", "adapter_evaluation", "registered_adapter")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *([\w.]+)$")


def run_pipeline(config: Path, home: Path, *python_flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "QLORA_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run([sys.executable, *python_flags, "-m", "pipelines.run", str(config)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_a_fully_cached_rerun_imports_no_mlflow(tiny_base_dir, tmp_path, qlora_home):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config("warm-run", tiny_base_dir)))
    cold = run_pipeline(config, qlora_home)
    assert cold.stdout.strip().splitlines()[-1] == "model_uri: models:/warm-run/1"

    warm = run_pipeline(config, qlora_home, "-X", "importtime")  # -X importtime lists every import on stderr
    steps = [line for line in warm.stdout.splitlines() if line.split(" ")[0] in STEPS]
    assert len(steps) == 5 and all(" cache hit " in line for line in steps), steps
    assert warm.stdout.strip().splitlines()[-1] == "model_uri: models:/warm-run/1"
    assert "aliases on version 1: candidate, champion" in warm.stdout
    imported = {m[1].split(".")[0] for m in map(IMPORTED.match, warm.stderr.splitlines()) if m}
    assert "dagster" in imported  # the listing is there: what it lacks was not imported
    assert sorted(imported & set(HEAVY)) == []
