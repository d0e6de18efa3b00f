"""The server fixtures themselves: PostgreSQL wants its password, S3 keeps objects, MLflow stores artifacts in S3."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


def test_postgres_takes_the_password_and_refuses_a_wrong_one(postgres_server):
    import psycopg2

    uri = postgres_server.create_database("fixture_check")
    with psycopg2.connect(uri, password=postgres_server.password) as conn, conn.cursor() as cur:
        cur.execute("select current_user, current_database()")
        assert cur.fetchone() == (postgres_server.user, "fixture_check")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(uri, password="wrong")


def test_mlflow_server_puts_artifacts_in_the_s3_bucket(mlflow_server, s3_server, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url)
    experiment = client.create_experiment("fixture-check")
    run = client.create_run(experiment)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    client.log_artifact(run.info.run_id, str(note))
    assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
    assert [k for k in s3_server.keys("mlflow/") if k.endswith(f"{run.info.run_id}/artifacts/note.txt")]


@pytest.mark.slow
def test_the_server_script_refuses_a_missing_bucket_in_one_line(s3_server):
    """A missing bucket does not stop `mlflow server`: uploads would fail with 500s that clients retry for minutes."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.services import MLFLOW_SERVER_SCRIPT

    env = {**os.environ, **s3_server.env, "PGPASSWORD": "unused", "MLFLOW_PG_HOST": "127.0.0.1", "MLFLOW_PG_USER": "u",
           "MLFLOW_PG_DB": "d", "MLFLOW_ARTIFACTS_DESTINATION": "s3://no-such-bucket/mlflow",
           "MLFLOW": str(Path(sys.executable).parent / "mlflow")}
    proc = subprocess.run(["bash", str(MLFLOW_SERVER_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"deploy/mlflow-server.sh: S3 bucket 'no-such-bucket' cannot be used at {s3_server.env['MLFLOW_S3_ENDPOINT_URL']} "
        "(404): create it (or fix the keys) first")
