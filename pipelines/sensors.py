"""A sensor that retrains when the watched dataset's content changes, once per content."""

from __future__ import annotations

import os

import dagster as dg

from ops.data.source_watch import DEFAULT_SOURCE, retrain_run_config, run_key, source_fingerprint

DEFAULT_INTERVAL_S = 300  # hashing a dataset file every few minutes is cheap; data rarely changes faster


def watched_source() -> str:
    return os.environ.get("QLORA_WATCH_SOURCE", DEFAULT_SOURCE)


@dg.sensor(
    name="qlora_data_sensor",
    job_name="qlora_pipeline",
    minimum_interval_seconds=int(os.environ.get("QLORA_SENSOR_INTERVAL_S", DEFAULT_INTERVAL_S)),
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def qlora_data_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Request a qlora_pipeline run when the content of QLORA_WATCH_SOURCE (default: the bundled set) changes."""
    source = watched_source()
    fp = source_fingerprint(source)
    if fp is None:
        return dg.SkipReason(f"cannot read the current revision of {source} (hub unreachable)")
    # The cursor is the last fingerprint a run was requested for; Dagster stores it, so it survives restarts.
    if fp == context.cursor:
        return dg.SkipReason(f"{source} unchanged ({fp})")
    request = dg.RunRequest(
        run_key=run_key(source, fp),  # the same content never triggers twice, even with a reset cursor
        run_config=retrain_run_config(source, os.environ.get("QLORA_RETRAIN_RUN_CONFIG")),
        tags={"qlora/data_fingerprint": fp, "qlora/source": source[-200:]},
    )
    context.log.info(f"{source} changed: {context.cursor} -> {fp}; requesting a run")
    return dg.SensorResult(run_requests=[request], cursor=fp)
