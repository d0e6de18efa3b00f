"""The headless runner: a failed run ends with one line per cause, the traceback goes to the run's log file; a run
prints the steps' lines without Dagster's events or library notices, and ends with what happened in the registry."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from pipelines.console import first_line_without_class
from pipelines.run import registry_lines
from tests.run_configs import tiny_run_config

# A cached run: the first line, 6 step lines (5 assets and the checks, each a cache hit), the evaluation table
# (a blank line, a title, 6 table lines, a blank line), 5 step lines, the run's time, 3 registry lines.
CACHED_RUN_LINES = 25
# What libraries print that says nothing to a pipeline user; the run's log file gets it instead.
NOTICES = ("DEBUG", "Warning", "Successfully registered", "Created version", "bitsandbytes", "Loading weights",
           "Writing model shards", "huggingface_hub", "Traceback", "%|")


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


def registration(**changes) -> dict:
    """The registered_adapter asset's metadata (assets/registry.py) for a new champion version 3."""
    return {"model_name": "qlora-demo", "version": 3, "alias": "candidate", "alias_uri": "models:/qlora-demo@candidate",
            "alias_version": 3, "version_aliases": "candidate, champion", "gate_decision": "champion",
            "cache_hit": False, "model_uri": "models:/qlora-demo/3", **changes}


def test_the_ending_says_which_version_was_registered_where_the_aliases_went_and_the_gate():
    assert registry_lines(registration()) == [
        "registry: qlora-demo version 3 registered; alias candidate -> version 3",
        "champion gate: champion (alias champion -> version 3); aliases on version 3: candidate, champion",
        "model_uri: models:/qlora-demo/3"]


def test_the_ending_of_a_challenger_says_the_champion_stayed():
    lines = registry_lines(registration(gate_decision="challenger", version_aliases="candidate, challenger"))
    assert lines[1] == ("champion gate: challenger (champion stays on an earlier version); "
                        "aliases on version 3: candidate, challenger")


def test_the_ending_of_a_reused_version_says_nothing_was_registered_and_where_the_alias_is_now():
    lines = registry_lines(registration(cache_hit=True, alias_version=5, version_aliases="champion"))
    assert lines == [
        "registry: qlora-demo version 3 reused: it already held this adapter, nothing registered, no alias moved",
        "champion gate: champion (alias champion -> version 3); aliases on version 3: champion",
        "note: models:/qlora-demo@candidate is version 5 now, not this adapter's",
        "model_uri: models:/qlora-demo/3"]


@pytest.mark.slow
def test_a_run_prints_the_steps_lines_without_events_or_library_notices(tiny_base_dir, tmp_path, qlora_home):
    config = tiny_run_config("terminal-lines", tiny_base_dir)
    first = run_pipeline(config, tmp_path, qlora_home)
    assert first.returncode == 0, first.stderr[-3000:]
    cached = run_pipeline(config, tmp_path, qlora_home)
    assert cached.returncode == 0, cached.stderr[-3000:]
    for done in (first, cached):
        printed = done.stdout + done.stderr
        assert [notice for notice in NOTICES if notice in printed] == [], printed
    lines = (cached.stdout + cached.stderr).splitlines()
    assert len(lines) <= CACHED_RUN_LINES, "\n".join(lines)
    assert cached.stdout.splitlines()[-3:] == [
        "registry: terminal-lines version 1 reused: it already held this adapter, nothing registered, no alias moved",
        "champion gate: champion (alias champion -> version 1); aliases on version 1: candidate, champion",
        "model_uri: models:/terminal-lines/1"]
    # what MLflow printed while registering went to the first run's log file
    first_log = next(p for p in (qlora_home / "logs").glob("*.log") if p.stem in first.stdout.splitlines()[0])
    assert "Created version '1' of model 'terminal-lines'" in first_log.read_text()


def test_the_terminal_shows_a_step_waiting_for_a_pool_slot_and_no_other_event():
    import logging

    from pipelines.console import META, StepLinesOnly

    def record(message: str, event: object, level: int = logging.DEBUG) -> logging.LogRecord:
        rec = logging.LogRecord("qlora", level, __file__, 1, message, None, None)
        setattr(rec, META, {"orig_message": message, "dagster_event": event, "step_key": "qlora_adapter"})
        return rec

    keep = StepLinesOnly()
    assert keep.filter(record("Step blocked by limit for pool gpu", object()))  # a queued step is not a hung step
    assert not keep.filter(record("Step still blocked by limit for pool gpu", object()))  # repeats: log file only
    assert not keep.filter(record("Started execution of step \"qlora_adapter\".", object()))
    assert keep.filter(record("step 20/600  loss 5.2572", None, logging.INFO))
    assert not keep.filter(record("a step's own debug line", None, logging.DEBUG))


def test_a_refused_config_is_in_the_log_file_the_first_line_names(tmp_path, qlora_home, capsys):
    """The first line promises a log file; a run refused before it starts still leaves its reason there."""
    from pipelines import run

    config = tmp_path / "bad.yaml"
    config.write_text("ops:\n  qlora_adapter:\n    config:\n      r: 0\n      max_steps: 3\n")
    assert run.main([str(config)]) == 2
    out, err = capsys.readouterr()
    log_file = Path(re.search(r"full log in (\S+)", out)[1])
    assert err.strip().endswith("ops.qlora_adapter.config.r: r must be > 0, got 0")
    assert log_file.read_text().strip() == err.strip()
