"""The champion gate's rules, on a real MLflow sqlite registry, plus one real registration through the pipeline."""

import pytest
from mlflow import MlflowClient

from ops.registry.champion import (
    CHALLENGER,
    CHAMPION,
    SKIPPED,
    apply_gate,
    champion_value,
    decide,
    lower_is_better,
    promote,
)
from ops.registry.spec import RegistrySpec

NAME = "gate-test"


@pytest.fixture
def client(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    return client


def new_version(client, tmp_path) -> str:
    source = tmp_path / f"model-{len(client.search_model_versions(f'name = {NAME!r}'))}"
    source.mkdir()
    return str(client.create_model_version(NAME, str(source)).version)


def test_direction_and_margin():
    assert lower_is_better("tuned.eval_loss") and lower_is_better("tuned.perplexity")
    assert not lower_is_better("tuned.exact_match")
    assert decide("tuned.eval_loss", 1.0, None, None).decision == CHAMPION
    assert decide("tuned.eval_loss", 1.0, 1.2, "3").decision == CHAMPION
    assert decide("tuned.eval_loss", 1.2, 1.2, "3").decision == CHALLENGER  # a tie does not dethrone
    assert decide("tuned.eval_loss", 1.15, 1.2, "3", min_improvement=0.1).decision == CHALLENGER
    assert decide("tuned.exact_match", 0.6, 0.5, "3").decision == CHAMPION
    assert decide("tuned.exact_match", 0.4, 0.5, "3").decision == CHALLENGER


def test_spec_validates_gate_fields():
    with pytest.raises(ValueError, match="primary_metric must be one of"):
        RegistrySpec(primary_metric="tuned.accuracy")
    with pytest.raises(ValueError, match="min_improvement must be >= 0, got -1"):
        RegistrySpec(min_improvement=-1)
    with pytest.raises(ValueError, match="set by the champion gate"):
        RegistrySpec(alias="champion")


def test_gate_moves_aliases_and_tags_each_decision(client, tmp_path):
    v1, v2, v3 = (new_version(client, tmp_path) for _ in range(3))
    first = apply_gate(client, NAME, v1, "tuned.eval_loss", {"tuned.eval_loss": 1.5}, log=lambda _: None)
    assert first.decision == CHAMPION
    worse = apply_gate(client, NAME, v2, "tuned.eval_loss", {"tuned.eval_loss": 1.7}, log=lambda _: None)
    assert worse.decision == CHALLENGER and worse.champion_version == v1 and worse.champion_value == 1.5
    better = apply_gate(client, NAME, v3, "tuned.eval_loss", {"tuned.eval_loss": 1.1}, log=lambda _: None)
    assert better.decision == CHAMPION
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == v3
    assert str(client.get_model_version_by_alias(NAME, CHALLENGER).version) == v2
    tags = client.get_model_version(NAME, v2).tags
    assert tags["gate_decision"] == CHALLENGER and tags["gate_metric"] == "tuned.eval_loss"
    assert float(tags["gate_candidate_value"]) == 1.7 and float(tags["gate_champion_value"]) == 1.5
    assert tags["gate_champion_version"] == v1
    assert champion_value(client, NAME, "tuned.eval_loss") == (v3, 1.1)


def test_missing_metric_is_not_gated(client, tmp_path):
    v1 = new_version(client, tmp_path)
    assert apply_gate(client, NAME, v1, "tuned.eval_loss", {"eval_loss": 1.0}, log=lambda _: None).decision == SKIPPED
    assert champion_value(client, NAME, "tuned.eval_loss") == (None, None)


def test_promote_rolls_back_by_hand_and_records_it(client, tmp_path):
    v1, v2 = new_version(client, tmp_path), new_version(client, tmp_path)
    apply_gate(client, NAME, v1, "tuned.eval_loss", {"tuned.eval_loss": 1.5}, log=lambda _: None)
    apply_gate(client, NAME, v2, "tuned.eval_loss", {"tuned.eval_loss": 1.0}, log=lambda _: None)
    rolled = promote(client, NAME, v1, CHAMPION, log=lambda _: None)
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == v1
    assert rolled.champion_version == v2
    tags = client.get_model_version(NAME, v1).tags
    assert tags["gate_decision"] == "manual:champion" and tags["gate_candidate_value"] == "1.5"
    with pytest.raises(ValueError, match="reserved"):
        promote(client, NAME, v1, "latest", log=lambda _: None)


def test_promote_alias_job_from_the_definitions(client, tmp_path):
    from pipelines.definitions import defs

    v1 = new_version(client, tmp_path)
    job = defs.resolve_job_def("promote_alias")
    result = job.execute_in_process(
        run_config={"ops": {"promote_alias_op": {"config": {"model_name": NAME, "version": int(v1), "alias": "champion"}}},
                    "resources": {"mlflow": {"config": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}}}},
    )
    assert result.success
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == v1
