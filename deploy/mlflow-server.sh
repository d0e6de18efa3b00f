#!/usr/bin/env bash
# The shared MLflow tracking server: runs and the model registry in PostgreSQL, artifacts in S3, served through the
# server (proxied), so the pipeline's workers and model consumers need only its address (MLFLOW_TRACKING_URI).
#
#   MLFLOW_PG_HOST=db MLFLOW_PG_USER=mlflow MLFLOW_PG_DB=mlflow PGPASSWORD=... \
#   MLFLOW_ARTIFACTS_DESTINATION=s3://team-bucket/mlflow AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
#   [MLFLOW_S3_ENDPOINT_URL=http://minio:9000] deploy/mlflow-server.sh [--host 0.0.0.0 --port 5000]
#
# Secrets stay in the environment: libpq reads PGPASSWORD and boto3 the AWS_* keys, so neither appears on the command
# line (`ps`), in the backend URI the server logs, or in anything MLflow stores. Extra arguments go to `mlflow server`
# (e.g. --workers 4, --allowed-hosts mlflow.internal). tests/services.py starts the same command on loopback.
set -euo pipefail
: "${MLFLOW_PG_HOST:?set MLFLOW_PG_HOST (the PostgreSQL host)}"
: "${MLFLOW_PG_USER:?set MLFLOW_PG_USER}"
: "${MLFLOW_PG_DB:?set MLFLOW_PG_DB (a database the user may create tables in)}"
: "${PGPASSWORD:?set PGPASSWORD (the PostgreSQL password, read by libpq)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://bucket/mlflow}"
# postgresql+psycopg2: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the postgres extra installs psycopg2.
BACKEND="postgresql+psycopg2://${MLFLOW_PG_USER}@${MLFLOW_PG_HOST}:${MLFLOW_PG_PORT:-5432}/${MLFLOW_PG_DB}"
MLFLOW="${MLFLOW:-$(dirname "$0")/../.venv/bin/mlflow}"
command -v "$MLFLOW" >/dev/null || MLFLOW=mlflow
# --serve-artifacts: clients upload and download through the server (mlflow-artifacts:/ URIs), which alone holds the
# S3 keys; --default-artifact-root s3://... instead would have every client write to S3 with keys of its own.
exec "$MLFLOW" server --backend-store-uri "$BACKEND" --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --host "${MLFLOW_HOST:-127.0.0.1}" \
    --port "${MLFLOW_PORT:-5000}" "$@"
