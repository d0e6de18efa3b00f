"""Training with its MLflow run: the run is opened (or resumed with the checkpoints) before the first step, and
every logged loss goes to it. What the qlora_adapter asset runs; `python -m ops.train` trains without MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..model.device import DeviceInfo
from ..registry.tracking import MlflowTarget, open_training_run, redact_uri, run_description, run_name
from .callbacks import MlflowLossCallback
from .spec import TrainResult, TrainSpec
from .trainer import train_adapter


def spec_defaults(spec_type: type[TrainSpec]) -> dict[str, Any]:
    """Each field's default (fields that must be set have none and are left out)."""
    return {name: field.get_default(call_default_factory=True) for name, field in spec_type.model_fields.items()
            if not field.is_required()}


def outcome_tags(result: TrainResult) -> dict[str, str]:
    """What training decided, as run tags: the step the adapter holds, whether early stopping ended it."""
    tags = {"steps": str(result.steps), "stopped_early": str(result.stopped_early).lower()}
    if result.best_step is not None:
        tags["best_step"] = str(result.best_step)
    return tags


def close_run(tracking_uri: str, run_id: str, status: str, tags: dict[str, str], warn: Callable[[str], Any]) -> None:
    """Tag the run and mark it terminated with `status`; an MLflow failure is a warning, never the step's failure."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        client.set_terminated(run_id, status)
    except Exception as err:  # MLflow raises assorted types for network and database errors
        warn(f"could not mark MLflow run {run_id} {status} ({err})")


def train_tracked(model_dir: Path, dataset_dir: Path, out_dir: Path, spec: TrainSpec, device: DeviceInfo, *,
                  checkpoint_dir: Path, target: MlflowTarget, fingerprint: str, inputs: dict[str, str],
                  dagster_run_id: str, log: Callable[[str], Any] = print,
                  warn: Callable[[str], Any] = print) -> TrainResult:
    """`train_adapter` with its loss logged to an MLflow run that survives a resume.

    Args:
        model_dir, dataset_dir, out_dir, spec, device, checkpoint_dir: as for `train_adapter`.
        target: where the run goes.
        fingerprint, inputs: the adapter's fingerprint and its inputs' (the run's lineage tags).
        dagster_run_id: the Dagster run, tagged for lineage.
        log: progress lines. warn: MLflow logging failures (training goes on without them).
    Returns:
        the training result with `mlflow_run_id` and the redacted `tracking_uri`.
    Raises:
        TrackingServerUnavailable, RunNotStarted: before any training (see `open_training_run`).
        as `train_adapter` otherwise.
    """
    settings, defaults = spec.model_dump(), spec_defaults(type(spec))
    run_id = open_training_run(Path(checkpoint_dir) / "mlflow_run_id", target, fingerprint, inputs,
                               {"adapter": settings}, dagster_run_id, name=run_name(settings, defaults),
                               description=run_description(settings, defaults, inputs))
    log(f"MLflow run {run_id} at {redact_uri(target.tracking_uri)}: per-step loss is logged there")
    try:
        result = train_adapter(model_dir, dataset_dir, out_dir, spec, device, checkpoint_dir=checkpoint_dir,
                               callbacks=[MlflowLossCallback(target.tracking_uri, run_id, warn)], log=log)
    except BaseException:
        close_run(target.tracking_uri, run_id, "FAILED", {}, warn)  # not left RUNNING; a rerun resumes the same run
        raise
    # FINISHED until registration reopens it to log the model: a run whose later steps fail is not left RUNNING
    close_run(target.tracking_uri, run_id, "FINISHED", outcome_tags(result), warn)
    return result.model_copy(update={"mlflow_run_id": run_id, "tracking_uri": redact_uri(target.tracking_uri)})
