"""Time- and condition-driven retraining: a weekly schedule, and automation conditions on the downstream assets.

Turn on one of them in the UI (both start stopped):
- `qlora_retrain_schedule`: retrain on a fixed cadence (cron from QLORA_RETRAIN_CRON). Unchanged data and
  config hit the step cache and register nothing new, so a quiet week costs a few seconds.
- `default_automation_condition_sensor`: the adapter, evaluation and registration follow by themselves
  whenever training_dataset or the base model is materialized (by hand, or by another job).
The data sensor (pipelines/sensors.py) retrains when the dataset's content changes.
"""

from __future__ import annotations

import os

import dagster as dg

from ops.data.source_watch import DEFAULT_SOURCE, retrain_run_config

DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00: after a week's new data, before people look at the registry
DOWNSTREAM = ("qlora_adapter", "adapter_evaluation", "registered_adapter")

# eager: run when an upstream asset updates (and not while one is missing or running); the blocking-check
# clause keeps a run that failed a data check from training through the back door.
DOWNSTREAM_CONDITION = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def with_automation(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The pipeline's assets with DOWNSTREAM_CONDITION on the steps after the dataset and the base model."""
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=DOWNSTREAM_CONDITION)
        if spec.key.to_user_string() in DOWNSTREAM else spec,
        assets,
    )


def _run_config(context: dg.ScheduleEvaluationContext) -> dict:
    # Read at each tick, so editing the recipe or the source needs no code-server reload.
    return retrain_run_config(os.environ.get("QLORA_WATCH_SOURCE", DEFAULT_SOURCE),
                              os.environ.get("QLORA_RETRAIN_RUN_CONFIG"))


qlora_retrain_schedule = dg.ScheduleDefinition(
    name="qlora_retrain_schedule",
    job_name="qlora_pipeline",
    cron_schedule=os.environ.get("QLORA_RETRAIN_CRON", DEFAULT_CRON),
    run_config_fn=_run_config,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain on a fixed cadence (QLORA_RETRAIN_CRON); cached steps make an unchanged week cheap.",
)
