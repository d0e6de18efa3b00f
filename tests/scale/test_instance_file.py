"""deploy/dagster.yaml, the production instance, as the installed Dagster reads it (no server needed), and how
$QLORA_INSTANCE selects it."""

from __future__ import annotations

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from pipelines import instance as inst

PRODUCTION = REPO_ROOT / "deploy" / "dagster.yaml"
PG_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "6543", "DAGSTER_PG_USER": "dagster",
          "DAGSTER_PG_PASSWORD": "pg-FAKE-unit-password", "DAGSTER_PG_DB": "dagster_prod"}


@pytest.fixture
def pg_env(monkeypatch):
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)


def production_ref(home):
    from dagster._core.instance.ref import InstanceRef

    return InstanceRef.from_dir(str(home), config_dir=str(PRODUCTION.parent), config_filename=PRODUCTION.name)


def test_every_connection_setting_comes_from_the_environment():
    db = yaml.safe_load(PRODUCTION.read_text())["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in db.items() if k != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}}


def test_dagster_accepts_the_file_and_reads_the_pool_monitoring_retries_and_queue(pg_env, tmp_path):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.storage.config import pg_config
    from dagster_postgres.utils import pg_url_from_config

    config, _ = dagster_instance_config(str(PRODUCTION.parent), config_filename=PRODUCTION.name)
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op", "op_granularity_run_buffer": 1}
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0  # the default launcher cannot resume a run
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    ref = production_ref(tmp_path)
    assert (ref.storage_data.class_name, ref.run_coordinator_data.class_name) == (
        "DagsterPostgresStorage", "QueuedRunCoordinator")
    # What dagster-postgres connects to once the variables are read: the driver the project installs.
    resolved = process_config(pg_config(), yaml.safe_load(PRODUCTION.read_text())["storage"]["postgres"]).value
    assert pg_url_from_config(resolved) == (
        "postgresql+psycopg2://dagster:pg-FAKE-unit-password@db.internal:6543/dagster_prod")


def test_the_instance_reference_sent_to_daemons_and_workers_holds_no_password(pg_env, tmp_path):
    from dagster._serdes import serialize_value

    assert PG_ENV["DAGSTER_PG_PASSWORD"] not in serialize_value(production_ref(tmp_path))


def test_qlora_instance_names_the_file_relative_to_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(inst.INSTANCE_ENV, "deploy/dagster.yaml")
    assert inst.instance_file() == PRODUCTION
    monkeypatch.delenv(inst.INSTANCE_ENV)
    assert inst.instance_file() is None  # the embedded default: $DAGSTER_HOME/dagster.yaml, sqlite


def test_a_missing_instance_file_is_named_in_one_line(monkeypatch):
    monkeypatch.setenv(inst.INSTANCE_ENV, "deploy/nope.yaml")
    with pytest.raises(FileNotFoundError, match=r"^QLORA_INSTANCE=deploy/nope.yaml: no such instance file"):
        inst.instance_file()


def test_an_unset_variable_the_file_reads_is_named_in_one_line(monkeypatch, tmp_path, capsys):
    from pipelines import run

    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, "x")
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    assert inst.unset_variables(REPO_ROOT / "deploy" / "dagster.yaml") == ["DAGSTER_PG_PASSWORD"]
    monkeypatch.setenv(inst.INSTANCE_ENV, "deploy/dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with pytest.raises(inst.UnsetVariables) as err:
        inst.get_instance()
    assert run.instance_problem(err.value) == (
        "dagster.yaml reads DAGSTER_PG_PASSWORD from the environment, and it is not set")


@pytest.mark.slow
def test_a_refused_database_login_is_one_line_without_the_password(postgres_server, tmp_path, monkeypatch, capsys):
    from pipelines import run

    for key, value in postgres_server.dagster_env("dagster_refused").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "pg-FAKE-wrong-password")
    monkeypatch.setenv(inst.INSTANCE_ENV, str(PRODUCTION))
    config = tmp_path / "run.yaml"
    config.write_text("ops: {}\n")
    assert run.main([str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the Dagster instance cannot be opened: ") and \
        f'password authentication failed for user "{postgres_server.user}"' in err[-1], err
    assert not any("pg-FAKE-wrong-password" in line for line in err)
