"""Publish what the pipeline made: read the four upstream artifacts' results, tag the lineage, and register
the adapter once (or again, when forced). What the registered_adapter asset runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..core.store import ArtifactRef, read_config, read_result
from ..data.spec import DatasetSummary
from ..evaluation.report import EvaluationReport
from ..model.spec import QuantizedBase
from ..train.loss_curve import LOSS_CURVE_FILE
from ..train.spec import TrainResult
from .registration import Registration, register_once
from .spec import RegistrySpec, registration_fields  # noqa: F401  (re-exported: it was defined here)
from .tracking import MlflowTarget, check_tracking_server, lineage_tags, project_release

INPUTS = ("dataset", "base", "adapter", "evaluation")  # the names `refs` takes, and their lineage tags' prefixes


def publish_adapter(refs: dict[str, ArtifactRef], fingerprint: str, spec: RegistrySpec, target: MlflowTarget,
                    base_model_id: str, dagster_run_id: str, force: bool = False,
                    log: Callable[[str], Any] = print) -> Registration:
    """Register the adapter in `refs` with its base, evaluation and lineage, unless this fingerprint is registered.

    Args:
        refs: the artifacts of `INPUTS` (dataset, base, adapter, evaluation).
        fingerprint: the registration's fingerprint (tag `registration_fingerprint`: what makes it idempotent).
        spec: model name, alias, gate, whether to copy the base.
        target: where MLflow keeps the run and the version.
        base_model_id: the base as configured (a param of the run).
        dagster_run_id: the Dagster run, tagged for lineage.
        force: register a new version even when one already holds this fingerprint.
        log: one line per stage.
    Returns:
        the version that holds the adapter (`cache_hit` when it was registered before).
    Raises:
        KeyError: `refs` lacks one of INPUTS. TrackingServerUnavailable: the server does not answer.
        as `register_adapter` otherwise.
    """
    dataset, base = read_result(refs["dataset"], DatasetSummary), read_result(refs["base"], QuantizedBase)
    adapter, report = read_result(refs["adapter"], TrainResult), read_result(refs["evaluation"], EvaluationReport)
    check_tracking_server(target.tracking_uri)
    identity = base.base_identity
    tags = {"base_model_id": str(identity["model_id"]),
            "base_model_revision": str(identity.get("revision") or identity.get("content_hash")),
            **lineage_tags("registration", fingerprint, {name: refs[name].fingerprint for name in INPUTS},
                           dagster_run_id),
            "code_version": project_release()}
    return register_once(
        force=force, tracking_uri=target.tracking_uri, registry_uri=target.registry_uri,
        artifact_location=target.artifact_location, experiment=target.experiment, spec=spec,
        adapter_dir=Path(refs["adapter"].path) / "adapter", base_model_dir=Path(refs["base"].path) / "model",
        prompt_format=dataset.format, system_message=dataset.system_message,
        # One name per param: the adapter's config is `adapter.*` here and on the training run it resumes.
        params={"base_model": base_model_id, **{name: read_config(refs[name]) for name in INPUTS}},
        metrics={"base": report.base.model_dump(), "tuned": report.tuned.model_dump(),
                 "train_final_loss": adapter.final_loss},
        report_path=Path(refs["evaluation"].path) / "report.json", tags=tags, run_id=adapter.mlflow_run_id,
        log=log, log_base=spec.log_base, loss_curve=Path(refs["adapter"].path) / LOSS_CURVE_FILE)
