"""The embedded registry read with sqlite3 gives MLflow's own answers: registration hits and misses, aliases, the
champion and its metric; what it cannot read (another schema, another URI kind, a run it lacks) goes to MLflow.

The registry is a real one: MLflow's client creates its database, models, versions, tags, aliases, runs and metrics.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ops.registry import sqlite_registry
from ops.registry.champion import apply_gate, champion_value, read_champion
from ops.registry.register import find_version_by_tag
from ops.registry.registration import cached_registration
from ops.registry.sqlite_registry import NotReadable, alias_holder, registered_hit, run_metric

NAME, OTHER, TAG, METRIC = "reader-test", "reader-other", "registration_fingerprint", "tuned.eval_loss"


def mlflow_hit(client: MlflowClient, name: str, value: str):
    """What MLflow answers: (version, run, tags) of the tagged version and the model's aliases, or None."""
    found = find_version_by_tag(client, name, TAG, value)
    if found is None:
        return None
    aliases = {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}
    return (int(found.version), found.run_id, found.tags), aliases


def sqlite_hit(uri: str, name: str, value: str):
    hit = registered_hit(uri, name, TAG, value)
    return None if hit is None else ((hit[0].version, hit[0].run_id, hit[0].tags), hit[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict:
    """Model NAME: v1 tagged fp-a (run logged eval loss 1.5), v2 fp-b (run 1.2, NaN perplexity), v3 fp-a
    again, v4 fp-c deleted; aliases candidate -> v3, champion -> v2 (gated by the real gate). Model OTHER: v1
    tagged fp-a with no run."""
    home = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{home}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("reader", artifact_location=str(home / "artifacts"))
    runs = []
    for loss in (1.5, 1.2):
        run = client.create_run(experiment).info.run_id
        client.log_metric(run, METRIC, loss + 1.0, step=1)
        client.log_metric(run, METRIC, loss, step=2)  # the latest value is what get_run's metrics hold
        runs.append(run)
    client.log_metric(runs[1], "tuned.perplexity", float("nan"))
    for name in (NAME, OTHER):
        client.create_registered_model(name)

    def version(name: str, fp: str, run_id: str | None) -> str:
        source = home / f"{name}-{fp}-{run_id}"
        source.mkdir(exist_ok=True)
        return str(client.create_model_version(name, str(source), run_id=run_id, tags={TAG: fp, "note": "x"}).version)

    v1, v2 = version(NAME, "fp-a", runs[0]), version(NAME, "fp-b", runs[1])
    v3, v4 = version(NAME, "fp-a", runs[0]), version(NAME, "fp-c", runs[1])
    version(OTHER, "fp-a", None)
    apply_gate(client, NAME, v1, "tuned.exact_match", {"tuned.exact_match": 0.5}, log=lambda _: None)
    apply_gate(client, NAME, v2, "tuned.exact_match", {"tuned.exact_match": 0.7}, log=lambda _: None)
    client.set_registered_model_alias(NAME, "candidate", v3)
    client.delete_model_version(NAME, v4)
    return {"uri": uri, "client": client, "home": home, "runs": runs}


@pytest.mark.parametrize(("name", "value"), [(NAME, "fp-a"), (NAME, "fp-b"), (OTHER, "fp-a"), (NAME, "fp-c"),
                                             (NAME, "fp-z"), ("no-such-model", "fp-a")])
def test_registration_lookups_equal_mlflow_s(registry, name, value):
    """fp-a: the newest of two versions; fp-c: only a deleted version (a miss); fp-z and no-such-model: misses."""
    assert sqlite_hit(registry["uri"], name, value) == mlflow_hit(registry["client"], name, value)


def test_a_hit_reads_the_version_tags_and_aliases(registry):
    (version, run_id, tags), aliases = sqlite_hit(registry["uri"], NAME, "fp-a")
    assert (version, run_id, tags[TAG], tags["note"]) == (3, registry["runs"][0], "fp-a", "x")
    assert aliases == {"candidate": 3, "champion": 2}  # v2 beat v1, which lost the champion alias
    assert sqlite_hit(registry["uri"], NAME, "fp-c") is None  # v4 was deleted: no hit on a version that is gone


def test_cached_registration_matches_when_mlflow_answers_instead(registry, monkeypatch):
    uri = registry["uri"]
    direct = cached_registration(uri, uri, NAME, "candidate", TAG, "fp-b")
    assert direct.cache_hit and (direct.version, direct.alias_version, direct.version_aliases) == (2, 3, ["champion"])
    assert direct.gate_decision == "champion" and direct.model_uri == f"models:/{NAME}/2"
    # A schema this module does not know: the same question goes to MLflow and gets the same answer.
    monkeypatch.setitem(sqlite_registry.REGISTRY_COLUMNS, "model_versions", {"workspace", "name", "a_future_column"})
    with pytest.raises(NotReadable, match="a_future_column"):
        registered_hit(uri, NAME, TAG, "fp-b")
    assert cached_registration(uri, uri, NAME, "candidate", TAG, "fp-b") == direct
    assert cached_registration(uri, uri, NAME, "candidate", TAG, "fp-z") is None


@pytest.mark.parametrize("metric", ["tuned.exact_match", METRIC, "tuned.perplexity", "tuned.rouge_l"])
def test_champion_and_its_metric_equal_mlflow_s(registry, metric):
    """exact_match: the gate's tag; eval_loss: the run's latest value; perplexity: NaN; rouge_l: never logged."""
    uri = registry["uri"]
    got, expected = read_champion(uri, uri, NAME, metric), champion_value(registry["client"], NAME, metric)
    assert got[0] == expected[0] == "2"
    if metric == "tuned.perplexity":
        assert math.isnan(got[1]) and math.isnan(expected[1])
    else:
        assert got == expected
    assert read_champion(uri, uri, NAME, "tuned.exact_match") == ("2", 0.7)
    assert read_champion(uri, uri, NAME, METRIC) == ("2", 1.2)


def test_no_champion(registry):
    uri, client = registry["uri"], registry["client"]
    for name in (OTHER, "no-such-model"):
        assert read_champion(uri, uri, name, METRIC) == champion_value(client, name, METRIC) == (None, None)
    assert alias_holder(uri, NAME, "no-such-alias") is None


def test_a_champion_run_the_tracking_database_lacks_goes_to_mlflow(registry, tmp_path):
    """Registry and tracking in two databases, the champion's run in neither: MLflow's get_run raises, and so does
    the check, as before (the sqlite reader does not make up an answer)."""
    registry_uri, empty = registry["uri"], f"sqlite:///{tmp_path}/tracking.db"
    MlflowClient(tracking_uri=empty).search_experiments()  # MLflow creates the tracking schema
    with pytest.raises(NotReadable, match="no run"):
        run_metric(empty, registry["runs"][1], METRIC)
    with pytest.raises(MlflowException):
        read_champion(empty, registry_uri, NAME, METRIC)


def test_what_it_cannot_read(registry, tmp_path):
    missing = tmp_path / "none.db"
    for uri in (f"sqlite:///{missing}", "http://127.0.0.1:5000", f"file://{tmp_path}/mlruns"):
        with pytest.raises(NotReadable):
            registered_hit(uri, NAME, TAG, "fp-a")
    assert not missing.exists()  # read-only: never creates a database
    old = tmp_path / "old.db"  # MLflow 2's tables had no workspace column
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE model_versions (name TEXT, version INT, run_id TEXT, current_stage TEXT)")
    with pytest.raises(NotReadable, match="workspace"):
        registered_hit(f"sqlite:///{old}", NAME, TAG, "fp-a")


def test_workspaces_go_to_mlflow(registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    with pytest.raises(NotReadable, match="workspaces"):
        registered_hit(registry["uri"], NAME, TAG, "fp-a")


def test_reading_leaves_the_database_as_it_was(registry):
    database = Path(registry["uri"].removeprefix("sqlite:///"))
    before = database.read_bytes()
    registered_hit(registry["uri"], NAME, TAG, "fp-a")
    read_champion(registry["uri"], registry["uri"], NAME, METRIC)
    assert database.read_bytes() == before
