"""After a registration cache hit the returned model_uri still resolves to the version holding this adapter."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from ops.registry.register import mlflow_uris, register_once
from ops.registry.spec import RegistrySpec
from tests.tiny import write_tiny_report


def test_config_a_then_b_then_a_again_names_a_s_version(tiny_quantized, tiny_adapter, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = tmp_path / "report.json"
    write_tiny_report(report)

    def register(fingerprint: str) -> dict:
        return register_once(tracking_uri=uri, registry_uri=None, artifact_location=str(tmp_path / "artifacts"),
                             experiment="a-b-a", spec=RegistrySpec(model_name="aba"),
                             adapter_dir=tiny_adapter[0] / "adapter", base_model_dir=tiny_quantized[0] / "model",
                             prompt_format="alpaca", params={}, metrics={}, report_path=report,
                             tags={"registration_fingerprint": fingerprint}, log=lambda _: None)

    a, b, again = register("config-a"), register("config-b"), register("config-a")
    assert (a.version, b.version, again.version, again.cache_hit) == (1, 2, 1, True)
    assert again.model_uri == "models:/aba/1"
    # The alias stays where the newest registration put it, and the result says so.
    assert (again.alias_uri, again.alias_version, again.version_aliases) == ("models:/aba@candidate", 2, [])
    assert "candidate" in b.version_aliases  # the gate may add champion
    with mlflow_uris(uri, uri):  # MLflow's own resolution of each URI: the run that logged that version
        assert mlflow.models.get_model_info(again.model_uri).run_id == a.run_id
        assert mlflow.models.get_model_info(b.model_uri).run_id == b.run_id != a.run_id
    tags = MlflowClient(uri).get_model_version("aba", "1").tags
    assert tags["registration_fingerprint"] == "config-a"
