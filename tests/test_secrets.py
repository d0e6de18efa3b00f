"""Tokens and credentials come from the environment and never reach logs, metadata, MLflow or artifacts.

The same on a shared instance and registry (the PostgreSQL password, the S3 secret key, a password inside the tracking
URI; grepped in the PostgreSQL event log, the MLflow server's database and log, the S3 bucket and the run logs):
tests/scale/test_shared_services.py."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets import PIPELINE_ASSETS
from ops.registry.tracking import redact_uri
from pipelines.definitions import RESOURCES
from resources import BaseModelResource
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow

SECRETS = {"HF_TOKEN": "hf_FAKEtoken0123456789", "MLFLOW_TRACKING_PASSWORD": "mlflow-FAKE-password-42",
           "MLFLOW_TRACKING_TOKEN": "mlflow-FAKE-token-77"}


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_fake_tokens_never_leave_the_environment(tiny_base_dir, qlora_home, monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    config = tiny_run_config("secret-test", data={"max_rows": 60, "max_seq_len": 48},
                             train={"batch_size": 4, "save_steps": 1, "warmup_steps": 30},
                             evaluation={"num_generation_examples": 2, "max_new_tokens": 2})
    resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir))}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config, instance=instance)
    assert result.success

    event_text = "\n".join(str(e) for e in instance.all_logs(result.run_id))
    for value in SECRETS.values():
        assert value not in event_text, "a secret reached the Dagster event log or metadata"
        leaked = files_containing(qlora_home, value.encode())  # artifacts, summaries, MLflow db and artifacts
        assert not leaked, f"a secret was written to {leaked}"


def test_credentials_in_a_tracking_uri_are_redacted():
    assert redact_uri("https://alice:s3cret@mlflow.example.com:5000/path") == "https://mlflow.example.com:5000/path"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
