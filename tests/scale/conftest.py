"""The real servers of tests/services.py, for every test in this folder."""

from tests.services import mlflow_server, postgres_server, s3_server  # noqa: F401  (pytest fixtures)
