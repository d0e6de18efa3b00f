"""The MLflow run of a training, seen from the process that starts it: opened (or resumed with the checkpoints)
before the first step, closed FINISHED or FAILED after. No torch import: the qlora_adapter step runs this around
the torchrun it launches (ranks log their loss to the run by its id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..registry.tracking import MlflowTarget, open_training_run, redact_uri, run_description, run_name
from .spec import TrainResult, TrainSpec


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


def open_adapter_run(spec: TrainSpec, checkpoint_dir: Path, target: MlflowTarget, fingerprint: str,
                     inputs: dict[str, str], dagster_run_id: str, log: Callable[[str], Any] = print) -> str:
    """The MLflow run a training logs its loss to, opened before the first step (or resumed with the checkpoints).

    Args:
        spec: the training settings (the run's params; its name and note say how they differ from the defaults).
        checkpoint_dir: the run id is kept beside the checkpoints, so a resumed training keeps one run.
        target, fingerprint, inputs, dagster_run_id: as for `train_tracked`.
    Returns:
        the run id.
    Raises:
        TrackingServerUnavailable, RunNotStarted: see `open_training_run`.
    """
    settings, defaults = spec.model_dump(), spec_defaults(type(spec))
    run_id = open_training_run(Path(checkpoint_dir) / "mlflow_run_id", target, fingerprint, inputs,
                               {"adapter": settings}, dagster_run_id, name=run_name(settings, defaults),
                               description=run_description(settings, defaults, inputs))
    log(f"MLflow run {run_id} at {redact_uri(target.tracking_uri)}: per-step loss is logged there")
    return run_id


def finish_adapter_run(result: TrainResult, target: MlflowTarget, run_id: str,
                       warn: Callable[[str], Any] = print) -> TrainResult:
    """Mark the run FINISHED with what training decided as tags; the result with `mlflow_run_id` and the redacted
    `tracking_uri`."""
    # FINISHED until registration reopens it to log the model: a run whose later steps fail is not left RUNNING
    close_run(target.tracking_uri, run_id, "FINISHED", outcome_tags(result), warn)
    return result.model_copy(update={"mlflow_run_id": run_id, "tracking_uri": redact_uri(target.tracking_uri)})
