"""Links from the assets to the MLflow UI: its address, a run's page and a model version's page."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from resources import MLflowResource


@pytest.fixture(autouse=True)
def no_ui_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)


def test_sqlite_has_no_ui_until_one_is_named(qlora_home, monkeypatch):
    assert MLflowResource().resolved_ui_url() is None
    assert MLflowResource().run_url("abc") is None and MLflowResource().version_url("m", 1) is None
    monkeypatch.setenv("MLFLOW_UI_URL", "http://127.0.0.1:5000/")
    assert MLflowResource().resolved_ui_url() == "http://127.0.0.1:5000"
    assert MLflowResource(ui_url="https://mlflow.example.org").resolved_ui_url() == "https://mlflow.example.org"


def test_a_tracking_server_is_its_own_ui_without_credentials():
    server = MLflowResource(tracking_uri="https://user:secret@mlflow.example.org:8443/")
    assert server.resolved_ui_url() == "https://mlflow.example.org:8443"
    assert server.version_url("qlora demo", 3) == "https://mlflow.example.org:8443/#/models/qlora%20demo/versions/3"
    with pytest.raises(ValueError, match="ui_url must be an http\\(s\\) address such as http://127.0.0.1:5000, got 'localhost:5000'"):
        MLflowResource(ui_url="localhost:5000")


def test_an_env_address_that_is_no_url_gives_no_links(monkeypatch):
    monkeypatch.setenv("MLFLOW_UI_URL", "localhost:5000")  # no scheme: not guessed
    assert MLflowResource(tracking_uri="sqlite:///x.db").resolved_ui_url() is None


def test_run_url_names_the_runs_experiment(qlora_home):
    mlflow = MLflowResource(ui_url="http://127.0.0.1:5000")
    client = MlflowClient(mlflow.resolved_tracking_uri())
    experiment_id = client.create_experiment("links")
    run_id = client.create_run(experiment_id).info.run_id
    assert mlflow.run_url(run_id) == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
    logged = []
    assert mlflow.run_url("0" * 32, log=logged.append) is None  # no such run: no link, one line saying why
    assert len(logged) == 1 and "0" * 32 in logged[0]
    assert mlflow.run_url(None) is None


def test_the_runner_checks_the_address_before_any_step_and_leaves_env_values_to_dagster():
    from pipelines.run import check_resources

    assert check_resources({"mlflow": {"config": {"ui_url": "localhost:5000"}}}) == [
        "resources.mlflow.config.ui_url: ui_url must be an http(s) address such as http://127.0.0.1:5000, got "
        "'localhost:5000'"]
    assert check_resources({"mlflow": {"config": {"ui_url": {"env": "MLFLOW_UI_URL"}}}}) == []
