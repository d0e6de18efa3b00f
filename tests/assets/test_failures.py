"""Training that goes wrong stops with a clear error and registers nothing; bad input fails its own step."""

from __future__ import annotations

import dagster as dg
import pytest
from mlflow import MlflowClient

from assets import PIPELINE_ASSETS
from ops.core.paths import default_tracking_uri
from pipelines.definitions import RESOURCES
from resources import BaseModelResource
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow


def run(tiny_base_dir, ops_config: dict) -> dg.ExecuteInProcessResult:
    resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir))}
    config = tiny_run_config("failure-test", data={"max_rows": 80, "max_seq_len": 48}, **ops_config)
    return dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config, raise_on_error=False)


def step_error(result: dg.ExecuteInProcessResult, step: str) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == step)
    err = failure.step_failure_data.error
    return "\n".join(filter(None, [err.message, err.cause.message if err.cause else ""]))


def registered_versions() -> list:
    return MlflowClient(default_tracking_uri()).search_model_versions("name='failure-test'")


def test_a_nan_loss_stops_training_naming_the_step_and_registers_nothing(tiny_base_dir):
    result = run(tiny_base_dir, {"qlora_adapter": {"config": {
        "max_steps": 30, "batch_size": 4, "logging_steps": 1, "learning_rate": 1e12, "max_grad_norm": 1e12}}})
    assert not result.success
    message = step_error(result, "qlora_adapter")
    assert "NonFiniteLossError" in message or "loss became" in message
    assert "at step" in message
    assert registered_versions() == []


def test_a_missing_dataset_file_fails_the_first_step_and_caches_nothing(tiny_base_dir, qlora_home):
    result = run(tiny_base_dir, {"training_dataset": {"config": {"source": "/nonexistent/data.jsonl"}}})
    assert not result.success
    assert "dataset file /nonexistent/data.jsonl does not exist" in step_error(result, "training_dataset")
    assert not list((qlora_home / "artifacts").glob("training_dataset/*"))
    assert registered_versions() == []
