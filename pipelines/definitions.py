"""What `dagster dev -w workspace.yaml` loads: five assets and their checks, three jobs, a schedule, a sensor."""

from __future__ import annotations

import dagster as dg
import yaml

from assets import PIPELINE_ASSETS
from assets.checks import ASSET_CHECKS
from ops.core.paths import REPO_ROOT
from pipelines.checked_jobs import checked_asset_job
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
                       TrainingLauncher,
)

# Every default is local and embedded (data home $QLORA_HOME); a run's config overrides any of them.
RESOURCES = {
    "io_manager": ArtifactRefIOManager(),
    "store": ArtifactStoreResource(),
    "base_model": BaseModelResource(),
    "gpu": GPUResource(),
    "mlflow": MLflowResource(),
    "registered_model": RegisteredModelResource(),
    "training_launcher": TrainingLauncher(),
}


def demo_recipe() -> dict:
    """configs/demo.yaml's `ops` and `resources`: the run config `make demo` runs."""
    recipe = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    return {key: recipe[key] for key in ("ops", "resources") if key in recipe}


# Both jobs refuse a bad value at Launch with the command line's message (pipelines/checked_jobs.py).
qlora_pipeline = checked_asset_job(
    "qlora_pipeline", PIPELINE_ASSETS, ASSET_CHECKS, RESOURCES,
    description="Dataset -> 4-bit base -> QLoRA adapter -> evaluation -> MLflow registry. Cached steps are skipped.",
)

# The launchpad opens with a job's defaults. A separate job, because Dagster makes every value of a job's default
# config the default of that field in every run of the job (headless runs included): on qlora_pipeline the demo's
# `format: alpaca` or `max_seq_len: 96` would silently apply to every other recipe.
qlora_demo = checked_asset_job(
    "qlora_demo", PIPELINE_ASSETS, ASSET_CHECKS, RESOURCES, default=demo_recipe(),
    description="The demo recipe (configs/demo.yaml) in the launchpad: Launch runs what `make demo` runs.",
)

defs = dg.Definitions(
    assets=with_automation(PIPELINE_ASSETS),  # automation conditions: see pipelines/schedules.py
    asset_checks=ASSET_CHECKS,
    jobs=[qlora_pipeline, qlora_demo, promote_alias],
    schedules=[qlora_retrain_schedule],
    sensors=[qlora_data_sensor],
    resources=RESOURCES,
)
