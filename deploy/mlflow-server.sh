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
command -v "$MLFLOW" >/dev/null || { echo "$0: no mlflow program (.venv/bin/mlflow or on PATH); set MLFLOW=/path/to/mlflow" >&2; exit 127; }
# A missing bucket would not stop the server: every artifact upload would fail with a 500 that clients retry for
# minutes, the cause (NoSuchBucket) only in this server's log. Check it before starting.
if [[ "$MLFLOW_ARTIFACTS_DESTINATION" == s3://* ]]; then
    PY="$(dirname "$(command -v "$MLFLOW")")/python"
    [ -x "$PY" ] || PY=python3
    "$PY" - "$MLFLOW_ARTIFACTS_DESTINATION" <<'CHECK' || exit 1
import os, sys
import boto3, botocore.exceptions
bucket, endpoint = sys.argv[1][len("s3://"):].split("/", 1)[0], os.environ.get("MLFLOW_S3_ENDPOINT_URL")
try:
    boto3.client("s3", endpoint_url=endpoint).head_bucket(Bucket=bucket)
except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
    code = e.response["Error"].get("Code") if isinstance(e, botocore.exceptions.ClientError) else type(e).__name__
    sys.exit(f"deploy/mlflow-server.sh: S3 bucket {bucket!r} cannot be used at {endpoint or 'AWS'} ({code}): create it "
             "(or fix the keys) first")
CHECK
fi
# --serve-artifacts: clients upload and download through the server (mlflow-artifacts:/ URIs), which alone holds the
# S3 keys; --default-artifact-root s3://... instead would have every client write to S3 with keys of its own.
exec "$MLFLOW" server --backend-store-uri "$BACKEND" --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --host "${MLFLOW_HOST:-127.0.0.1}" \
    --port "${MLFLOW_PORT:-5000}" "$@"
