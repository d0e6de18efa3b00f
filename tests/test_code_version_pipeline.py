"""The cache follows the code: an edit to an op recomputes the steps that run it and what follows, nothing else.

Each test edits a copy of the project (its tracked and untracked-but-not-ignored files) and runs the headless
runner there in a fresh process, against a data home warmed by one run of the unedited code from another
copy: code versions are content hashes, so where the copy lies does not matter, only what it holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow

STEPS = ("training_dataset", "quantized_base_model", "qlora_adapter", "adapter_evaluation", "registered_adapter")
# The embedded base at its default size (so its builder's cache is exercised too), a couple of training steps.
TINY_RUN = tiny_run_config(
    "code-version-test", "embedded:tiny-llama", data={"source": "bundled", "format": "alpaca", "eval_fraction": 0.2},
    train={"r": 4, "alpha": 8, "batch_size": 4, "warmup_steps": 0},
    evaluation={"max_new_tokens": 2, "batch_size": 8})


def copy_project(dest: Path) -> Path:
    """The project's files as git sees them (tracked, plus new files not ignored), copied to `dest`."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO_ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"the project is not a git checkout here ({err}); cannot tell its files from build outputs")
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not part of the project now
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def run_pipeline(project: Path, config: Path, home: Path) -> dict[str, tuple[str, str]]:
    """Run `python -m pipelines.run` in `project`; return {step: ("cache hit" | "computed", fingerprint)}."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env.update(PYTHONPATH=str(project), QLORA_HOME=str(home), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "pipelines.run", str(config)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    steps = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in STEPS:  # "<step>  cache hit|computed  <fingerprint>"
            steps[parts[0]] = (" ".join(parts[1:-1]), parts[-1])
    assert set(steps) == set(STEPS), proc.stdout[-2000:]
    return steps


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update this test's edit"
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(data home, run config, steps) after one run of the unedited project in an empty data home."""
    root = tmp_path_factory.mktemp("code-version")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    steps = run_pipeline(copy_project(root / "original"), config, root / "home")
    assert all(state == "computed" for state, _ in steps.values()), steps
    return root / "home", config, steps


def test_changing_the_prompt_format_recomputes_the_dataset_and_everything_after(warm, tmp_path):
    home, config, before = warm
    project = copy_project(tmp_path / "edited")
    edit(project / "ops" / "data" / "prompt_formats.py", "### Response:", "### Answer:")

    after = run_pipeline(project, config, home)

    assert after["quantized_base_model"] == ("cache hit", before["quantized_base_model"][1])
    for step in ("training_dataset", "qlora_adapter", "adapter_evaluation", "registered_adapter"):
        assert after[step][0] == "computed" and after[step][1] != before[step][1], (step, before[step], after[step])
    dataset_summary = home / "artifacts" / "training_dataset" / after["training_dataset"][1] / "_COMPLETE.json"
    assert "### Answer:" in dataset_summary.read_text()  # the new dataset holds the new template


def test_changing_evaluation_code_recomputes_evaluation_and_registration_only(warm, tmp_path):
    home, config, before = warm
    project = copy_project(tmp_path / "edited")
    # A real code change (a new statement), not a comment: comments and docstrings do not count.
    edit(project / "ops" / "evaluation" / "evaluator.py", "\n\ndef perplexity(",
         "\n\nEDITED_FOR_THE_TEST = True\n\n\ndef perplexity(")

    after = run_pipeline(project, config, home)

    for step in ("training_dataset", "quantized_base_model", "qlora_adapter"):
        assert after[step] == ("cache hit", before[step][1]), (step, before[step], after[step])
    for step in ("adapter_evaluation", "registered_adapter"):
        assert after[step][0] == "computed" and after[step][1] != before[step][1], (step, before[step], after[step])
