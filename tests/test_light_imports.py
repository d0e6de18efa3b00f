"""Unit tests that need no model import no torch: collecting them stays fast (torch and transformers take
seconds per process on two cores), and an op module that starts importing torch at its top shows up here."""

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
         "tests.ops.test_specs")
PROBE = """
import importlib, json, sys
for name in ["tests.conftest", "tests.ops.conftest", *sys.argv[1:]]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in ("torch", "bitsandbytes", "peft") if m in sys.modules)))
"""


@pytest.mark.slow  # starts a subprocess
def test_unit_test_modules_import_no_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE, *LIGHT], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
