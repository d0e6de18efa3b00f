"""The headless runner: a failed run ends with one line per cause, the traceback goes to the run's log file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from pipelines.console import first_line_without_class


def run_pipeline(config: dict, tmp_path: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "QLORA_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "pipelines.run", str(path), *extra], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def base_config(base_dir: Path, **ops: dict) -> dict:
    return {"resources": {"base_model": {"config": {"model_id": str(base_dir)}}},
            "ops": {"training_dataset": {"config": {"max_rows": 80, "max_seq_len": 48}}, **ops}}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(("cls_name", "message", "expected"), [
    ("DataError", "ops.data.sources.DataError: dataset file x does not exist\n", "dataset file x does not exist"),
    ("AssertionError", "AssertionError: N must be divisible by block_n\n", "N must be divisible by block_n"),
    ("ValueError", "ValueError: first line\nsecond line", "first line"),
    ("KeyError", "KeyError: 'model'", "'model'"),
    ("RuntimeError", "RuntimeError: \n", "(no message)"),
])
def test_the_class_is_named_once_and_the_message_is_one_line(cls_name, message, expected):
    assert first_line_without_class(cls_name, message) == expected


@pytest.mark.slow
def test_a_failed_step_ends_with_one_line_and_the_traceback_is_in_the_log_file(tiny_base_dir, tmp_path, qlora_home):
    missing = tmp_path / "nope.jsonl"
    started = time.monotonic()
    done = run_pipeline(base_config(tiny_base_dir, training_dataset={"config": {"source": str(missing)}}),
                        tmp_path, qlora_home)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == f"error: step training_dataset failed: DataError: dataset file {missing} does not exist"
    assert error_lines(done.stderr) == [done.stderr.splitlines()[-1]]
    assert "Traceback" not in done.stderr and "Stack Trace" not in done.stderr and "DEBUG" not in done.stderr
    assert "Dependencies for step" not in done.stderr  # skipped steps are not listed one by one
    log_file = next((qlora_home / "logs").glob("*.log"))
    assert log_file.name.split(".")[0] in done.stdout  # the first line says where the full log is
    log = log_file.read_text()
    assert "Stack Trace" in log and "STEP_FAILURE" in log and "raise DataError" in log
    assert time.monotonic() - started < 120  # the process exits with its last line, not minutes later

    verbose = run_pipeline(base_config(tiny_base_dir, training_dataset={"config": {"source": str(missing)}}),
                           tmp_path, qlora_home, "--verbose")
    assert "Stack Trace" in verbose.stderr and "STEP_FAILURE" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == done.stderr.splitlines()[-1]


@pytest.mark.slow
def test_every_failed_step_is_listed(tiny_base_dir, tmp_path, qlora_home):
    broken = tmp_path / "broken-base"
    shutil.copytree(tiny_base_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # cut off: the quantize step cannot load it
    missing = tmp_path / "nope.jsonl"
    done = run_pipeline(base_config(broken, training_dataset={"config": {"source": str(missing)}}), tmp_path, qlora_home)
    assert done.returncode == 1
    lines = error_lines(done.stderr)
    assert f"error: step training_dataset failed: DataError: dataset file {missing} does not exist" in lines
    assert any(line.startswith("error: step quantized_base_model failed: ") for line in lines), lines
    assert len(lines) == 2, lines


@pytest.mark.slow
def test_a_blocking_check_says_why_it_stopped_the_run(tiny_base_dir, tmp_path, qlora_home):
    config = base_config(tiny_base_dir, training_dataset_checks={"config": {"min_train_rows": 100000}})
    done = run_pipeline(config, tmp_path, qlora_home)
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        "error: blocking check enough_rows on training_dataset failed: 72 train / 8 eval rows (need at least 100000 / 4)"]


def test_a_step_that_exhausted_its_retries_names_the_last_error():
    from dagster._utils.error import SerializableErrorInfo

    from pipelines.console import _user_error

    cause = SerializableErrorInfo("ops.registry.tracking.TrackingServerUnavailable: server x does not answer\n", [],
                                  "TrackingServerUnavailable")
    retried = SerializableErrorInfo("dagster._core.definitions.events.RetryRequestedFromPolicy: Exceeded max_retries of 3\n",
                                    [], "RetryRequestedFromPolicy", cause)
    wrapped = SerializableErrorInfo("Error occurred while executing op", [], "DagsterExecutionStepExecutionError", retried)
    assert _user_error(wrapped) is cause
