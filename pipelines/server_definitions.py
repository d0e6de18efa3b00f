"""The local pipeline (pipelines.definitions) with MLflow on the shared tracking server that $MLFLOW_TRACKING_URI
names: what deploy/compose.yaml's `dagster dev` loads, and the base of the Kubernetes location
(pipelines/k8s_definitions.py). The server's artifact store (S3) is reached with MLflow's and boto3's own
variables: MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
"""

from __future__ import annotations

import dagster as dg

from assets import PIPELINE_ASSETS
from assets.checks import ASSET_CHECKS
from pipelines import definitions as local
from pipelines.schedules import qlora_retrain_schedule, with_automation
from pipelines.sensors import qlora_data_sensor
from resources import MLflowResource

JOBS = [local.qlora_pipeline, local.qlora_demo, local.promote_alias]


def server_resources() -> dict:
    """The local resources, MLflow read from $MLFLOW_TRACKING_URI when a run starts (a missing variable fails the
    run at once, naming it)."""
    return {**local.RESOURCES, "mlflow": MLflowResource(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"))}


def server_definitions(jobs: list = JOBS, resources: dict | None = None, **kwargs) -> dg.Definitions:
    """The pipeline's assets, checks, schedule and sensor with `jobs` and `resources` (default: server_resources)."""
    return dg.Definitions(assets=with_automation(PIPELINE_ASSETS), asset_checks=ASSET_CHECKS, jobs=jobs,
                          schedules=[qlora_retrain_schedule], sensors=[qlora_data_sensor],
                          resources=resources or server_resources(), **kwargs)


defs = server_definitions()
