"""The headless runner, config A, then B, then A again in one data home: the third run prints a model_uri that
resolves to A's version (not the alias, which B moved), and the registered run logs each param once."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from ops.registry.register import mlflow_uris
from pipelines import run
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow


def write_config(path, base_dir, learning_rate: float):
    path.write_text(yaml.safe_dump(tiny_run_config("aba", base_dir, train={"learning_rate": learning_rate})))
    return str(path)


def run_lines(config: str, capsys) -> list[str]:
    assert run.main([config]) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_a_b_a_prints_a_s_version_and_logs_each_param_once(tiny_base_dir, qlora_home, tmp_path, capsys):
    a = write_config(tmp_path / "a.yaml", tiny_base_dir, 1e-3)
    b = write_config(tmp_path / "b.yaml", tiny_base_dir, 5e-4)
    assert run_lines(a, capsys)[-1] == "model_uri: models:/aba/1"
    assert run_lines(b, capsys)[-1] == "model_uri: models:/aba/2"
    again = run_lines(a, capsys)
    assert again[-1] == "model_uri: models:/aba/1"
    assert "models:/aba@candidate is version 2" in again[-2]  # the alias B moved is reported, not printed as the URI

    uri = f"sqlite:///{qlora_home / 'mlflow.db'}"
    client = MlflowClient(uri)
    first = client.get_model_version("aba", "1")
    with mlflow_uris(uri, uri):
        assert mlflow.models.get_model_info("models:/aba/1").run_id == first.run_id
        assert mlflow.models.get_model_info("models:/aba@candidate").run_id != first.run_id

    # Each param once: the adapter's config as adapter.* only (the training run and the registration agree on
    # the name), checksums as an artifact and a short digest, not as params or a long tag.
    params = client.get_run(first.run_id).data.params
    assert not [k for k in params if k.startswith("train.")], sorted(params)
    assert params["adapter.learning_rate"] == "0.001" and params["adapter.max_steps"] == "2"
    assert {"dataset.max_rows", "base.quant_type", "evaluation.max_new_tokens", "prompt_format"} <= set(params)
    assert not [k for k in params if "sha256" in k and k != "adapter_checksums_sha256"], sorted(params)
    assert max(len(v) for v in params.values()) <= 100
    assert len(first.tags["adapter_digest"]) == 16 and max(len(v) for v in first.tags.values()) <= 100
    assert [a.path for a in client.list_artifacts(first.run_id) if a.path.endswith(".json")] == ["adapter_checksums.json"]
