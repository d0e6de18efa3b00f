"""What must stay light to import. Unit tests that need no model import no torch: collecting them stays fast
(torch and transformers take seconds per process on two cores), and an op module that starts importing torch at
its top shows up here. Loading the pipeline's definitions (every run, the UI's code server, a cached rerun)
imports no ML library: each step imports its op after its cache check (issue 12: a rerun where every step was a
cache hit spent 17 of its 19.6 s importing torch, transformers and MLflow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ops.core.paths import REPO_ROOT

# Test modules (with the conftests pytest loads for them) that test rules, settings, files and the registry
# without a model.
LIGHT = ("tests.ops.core.test_store", "tests.ops.core.test_fingerprint", "tests.ops.core.test_code_version",
         "tests.ops.data.test_checks", "tests.ops.data.test_sources", "tests.ops.data.test_prompt_formats",
         "tests.ops.data.test_chat_template", "tests.ops.evaluation.test_checks", "tests.ops.registry.test_champion",
         "tests.ops.test_specs", "tests.ops.model.test_device_probe")
# The libraries a fully cached run must not load: the model stack, the metric library and the tracking client.
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "mlflow", "evaluate", "datasets")
PROBE = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.argv[1].split(",") if m in sys.modules)))
"""


def heavy_modules_after_importing(*modules: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `heavy` a fresh interpreter holds in sys.modules after importing `modules`, in that order."""
    proc = subprocess.run([sys.executable, "-c", PROBE, ",".join(heavy), *modules], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # starts a subprocess
def test_unit_test_modules_import_no_torch():
    assert heavy_modules_after_importing("tests.conftest", "tests.ops.conftest", *LIGHT,
                                         heavy=("torch", "bitsandbytes", "peft")) == []


@pytest.mark.slow  # starts a subprocess
def test_the_definitions_import_no_ml_library():
    # What `dagster dev`, the headless runner and a fully cached run load before any step computes.
    assert heavy_modules_after_importing("pipelines.definitions", "pipelines.run") == []


@pytest.mark.slow  # starts a subprocess
def test_the_resources_and_specs_import_no_ml_library():
    assert heavy_modules_after_importing("resources", "assets.common", "ops.registry.spec", "ops.model.base_resolution",
                                         "ops.model.device_probe") == []
