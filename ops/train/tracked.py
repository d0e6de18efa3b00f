"""Training with its MLflow run: the run is opened (or resumed with the checkpoints) before the first step, and
every logged loss goes to it, all in this process (the qlora_adapter asset runs the same under torchrun, with
ops/train/run_tracking.py around it); `python -m ops.train` trains without MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..model.device import DeviceInfo
from ..registry.tracking import MlflowTarget
from .callbacks import MlflowLossCallback
from .run_tracking import close_run, finish_adapter_run, open_adapter_run
from .spec import TrainResult, TrainSpec
from .trainer import train_adapter


def train_tracked(model_dir: Path, dataset_dir: Path, out_dir: Path, spec: TrainSpec, device: DeviceInfo, *,
                  checkpoint_dir: Path, target: MlflowTarget, fingerprint: str, inputs: dict[str, str],
                  dagster_run_id: str, log: Callable[[str], Any] = print,
                  warn: Callable[[str], Any] = print) -> TrainResult:
    """`train_adapter` in this process with its loss logged to an MLflow run that survives a resume (the
    qlora_adapter step runs the same under torchrun: assets/adapter.py).

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
    run_id = open_adapter_run(spec, checkpoint_dir, target, fingerprint, inputs, dagster_run_id, log)
    try:
        result = train_adapter(model_dir, dataset_dir, out_dir, spec, device, checkpoint_dir=checkpoint_dir,
                               callbacks=[MlflowLossCallback(target.tracking_uri, run_id, warn)], log=log)
    except BaseException:
        close_run(target.tracking_uri, run_id, "FAILED", {}, warn)  # not left RUNNING; a rerun resumes the same run
        raise
    return finish_adapter_run(result, target, run_id, warn)
