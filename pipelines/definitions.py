"""What `dagster dev -w workspace.yaml` loads: five assets and their checks, two jobs, a schedule, a sensor."""

from __future__ import annotations

import dagster as dg

from assets import PIPELINE_ASSETS
from assets.checks import ASSET_CHECKS
from pipelines.jobs import promote_alias
from pipelines.schedules import qlora_retrain_schedule, with_automation
from pipelines.sensors import qlora_data_sensor
from resources import (
                       ArtifactRefIOManager,
                       ArtifactStoreResource,
                       BaseModelResource,
                       GPUResource,
                       MLflowResource,
                       RegisteredModelResource,
)

qlora_pipeline = dg.define_asset_job(
    "qlora_pipeline",
    selection=dg.AssetSelection.assets(*PIPELINE_ASSETS),
    description="Dataset -> 4-bit base -> QLoRA adapter -> evaluation -> MLflow registry. Cached steps are skipped.",
)

# Every default is local and embedded (data home $QLORA_HOME); a run's config overrides any of them.
RESOURCES = {
    "io_manager": ArtifactRefIOManager(),
    "store": ArtifactStoreResource(),
    "base_model": BaseModelResource(),
    "gpu": GPUResource(),
    "mlflow": MLflowResource(),
    "registered_model": RegisteredModelResource(),
}

defs = dg.Definitions(
    assets=with_automation(PIPELINE_ASSETS),  # automation conditions: see pipelines/schedules.py
    asset_checks=ASSET_CHECKS,
    jobs=[qlora_pipeline, promote_alias],
    schedules=[qlora_retrain_schedule],
    sensors=[qlora_data_sensor],
    resources=RESOURCES,
)
