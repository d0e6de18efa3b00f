"""The data and evaluation checks: their rules on small datasets, and real runs where they pass or block."""

import dagster as dg
import datasets
import pytest

from assets import PIPELINE_ASSETS
from assets.checks import ASSET_CHECKS
from ops import checks
from pipelines.definitions import RESOURCES
from resources import BaseModelResource
from tests.assets.test_assets import run_config


def splits(train: list[tuple[str, str]], held_out: list[tuple[str, str]]) -> datasets.DatasetDict:
    def ds(pairs):
        return datasets.Dataset.from_dict({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]})

    return datasets.DatasetDict({"train": ds(train), "eval": ds(held_out)})


def test_data_rules():
    clean = splits([("q1", "a1"), ("q2", "a2")], [("q3", "a3")])
    assert checks.no_empty_text(clean).passed and checks.splits_disjoint(clean).passed
    assert not checks.no_empty_text(splits([("q1", " ")], [("q3", "a3")])).passed
    leaky = checks.splits_disjoint(splits([("q1", "a1"), ("q3", "a3")], [("q3", "a3")]))
    assert not leaky.passed and leaky.metadata["overlapping_examples"] == 1
    assert checks.enough_rows(clean, 2, 1).passed and not checks.enough_rows(clean, 3, 1).passed
    summary = {"rows": 90, "dropped_no_target": 10, "truncated_rows": 20, "max_seq_len": 64}
    assert checks.truncation_within(summary, 0.2).passed and not checks.truncation_within(summary, 0.1).passed


def test_evaluation_rules():
    report = {"base": {"eval_loss": 3.0}, "tuned": {"eval_loss": 2.0, "exact_match": 0.5}}
    assert checks.beats_base(report).passed
    assert not checks.beats_base({"base": {"eval_loss": 2.0}, "tuned": {"eval_loss": 2.0}}).passed
    assert checks.no_regression(report, "tuned.eval_loss", None, None).passed
    assert checks.no_regression(report, "tuned.eval_loss", 2.5, "1").passed
    assert not checks.no_regression(report, "tuned.exact_match", 0.6, "1").passed


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
    config["ops"]["registered_adapter"]["config"]["min_improvement"] = 100.0
    second = materialize(tiny_base_dir, config)
    assert second.success
    info = registered(second)
    assert info["version"] == 2 and info["gate_decision"] == "challenger"
    assert check_results(second)["no_regression_vs_champion"].metadata["champion_version"].value == "1"


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
