"""The five assets through `dg.materialize` on the tiny model: metadata, caching and selective recompute."""

from __future__ import annotations

import dagster as dg
import pytest

from assets import PIPELINE_ASSETS
from pipelines.definitions import RESOURCES
from resources import BaseModelResource
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow


def run_config(tiny_steps: int = 3, **train_overrides) -> dict:
    return tiny_run_config("tiny-test", train={"max_steps": tiny_steps, **train_overrides})


def materialize(tiny_base_dir, config: dict, selection=None) -> dict[str, dict]:
    resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir))}
    result = dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config, selection=selection)
    assert result.success
    found = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        found[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return found


def test_pipeline_materializes_caches_and_recomputes_only_downstream(tiny_base_dir):
    first = materialize(tiny_base_dir, run_config())
    assert set(first) == {a.key.to_user_string() for a in PIPELINE_ASSETS}
    assert not any(m["cache_hit"] for m in first.values())

    data, base, adapter = first["training_dataset"], first["quantized_base_model"], first["qlora_adapter"]
    assert data["rows"] == data["train_rows"] + data["eval_rows"] and data["eval_rows"] >= 1
    assert "| prompt | completion |" in data["preview"]
    assert 4.12 <= base["bits_per_quantized_weight"] <= 4.2 and base["double_quant"] is True
    assert adapter["steps"] == 3 and "fell back" in adapter["optimizer"]
    assert first["registered_adapter"]["model_uri"] == "models:/tiny-test/1"
    assert first["registered_adapter"]["version"] == 1

    second = materialize(tiny_base_dir, run_config())
    assert all(m["cache_hit"] for m in second.values()), {k: m["cache_hit"] for k, m in second.items()}
    assert second["registered_adapter"]["version"] == 1  # the same adapter is not registered twice

    third = materialize(tiny_base_dir, run_config(learning_rate=5e-4))
    recomputed = {k for k, m in third.items() if not m["cache_hit"]}
    assert recomputed == {"qlora_adapter", "adapter_evaluation", "registered_adapter"}
    assert third["training_dataset"]["fingerprint"] == data["fingerprint"]
    assert third["registered_adapter"]["version"] == 2


def only(config: dict, asset: str) -> dict:
    """The run config of one step, for a run that selects only that step."""
    return {"ops": {asset: config["ops"][asset]}}


def test_one_step_reruns_alone_and_force_recomputes(tiny_base_dir):
    materialize(tiny_base_dir, run_config())
    alone = only(run_config(), "adapter_evaluation")
    cached = materialize(tiny_base_dir, alone, selection=[dg.AssetKey("adapter_evaluation")])
    assert set(cached) == {"adapter_evaluation"} and cached["adapter_evaluation"]["cache_hit"]

    alone["ops"]["adapter_evaluation"]["config"]["force"] = True
    again = materialize(tiny_base_dir, alone, selection=[dg.AssetKey("adapter_evaluation")])
    assert again["adapter_evaluation"]["cache_hit"] is False
    assert again["adapter_evaluation"]["fingerprint"] == cached["adapter_evaluation"]["fingerprint"]


def test_bad_config_fails_before_any_work(tiny_base_dir, qlora_home):
    bad = run_config()
    bad["ops"]["qlora_adapter"]["config"]["r"] = 0
    with pytest.raises(Exception, match="r must be > 0, got 0"):
        materialize(tiny_base_dir, bad)
    assert not (qlora_home / "artifacts" / "qlora_adapter").exists()
