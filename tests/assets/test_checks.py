"""The asset checks in real runs: where they pass, where they block, and the champion gate behind them."""

import dagster as dg
import pytest

from assets import PIPELINE_ASSETS
from assets.checks import ASSET_CHECKS
from ops.core.paths import artifacts_dir
from pipelines.definitions import RESOURCES
from resources import BaseModelResource
from tests.assets.test_assets import run_config


def materialize(tiny_base_dir, config: dict) -> dg.ExecuteInProcessResult:
    resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir))}
    return dg.materialize([*PIPELINE_ASSETS, *ASSET_CHECKS], resources=resources, run_config=config,
                          raise_on_error=False)


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def registered(result) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        if mat.asset_key.to_user_string() == "registered_adapter":
            return {k: v.value for k, v in mat.metadata.items()}
    return {}


@pytest.mark.slow
def test_checks_pass_then_gate_picks_champion_and_challenger(tiny_base_dir):
    first = materialize(tiny_base_dir, run_config())
    assert first.success
    evaluations = check_results(first)
    assert set(evaluations) == {"no_empty_text", "truncation_bounded", "splits_disjoint", "enough_rows", "beats_base",
                                "no_regression_vs_champion"}
    assert all(e.passed for e in evaluations.values()), {k: e.description for k, e in evaluations.items()}
    assert registered(first)["gate_decision"] == "champion"  # the first version has no champion to beat

    # A different adapter must beat the champion by an impossible margin: it is registered, as challenger.
    config = run_config(learning_rate=5e-4)
    config["resources"]["registered_model"]["config"]["min_improvement"] = 100.0
    second = materialize(tiny_base_dir, config)
    assert second.success
    info = registered(second)
    assert info["version"] == 2 and info["gate_decision"] == "challenger"
    assert check_results(second)["no_regression_vs_champion"].metadata["champion_version"].value == "1"
    # Same dataset, same bounds: the second run read the data checks' outcomes back instead of loading the splits.
    assert len(list((artifacts_dir() / "training_dataset_checks").iterdir())) == 1


@pytest.mark.slow
def test_failing_data_check_stops_the_run_before_training(tiny_base_dir, qlora_home):
    config = run_config()
    config["ops"]["training_dataset_checks"] = {"config": {"min_train_rows": 100_000}}
    result = materialize(tiny_base_dir, config)
    assert not result.success
    assert not check_results(result)["enough_rows"].passed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"training_dataset", "quantized_base_model"}
    assert not (qlora_home / "artifacts" / "qlora_adapter").exists()
