"""Register a trained adapter in MLflow: a run, the logged model, a registry version with lineage tags, an alias.

Callers go through `register_once` (ops/registry/registration.py): never the same adapter twice, and one
registration at a time on an embedded registry. sqlite allows one writer; MLflow's registration is several
transactions (model, version, tags, alias), and concurrent ones fail with "database is locked" or interleave. A
tracking server serialises for itself, so the lock applies to sqlite URIs only. Holding it also makes
check-then-register (idempotency) atomic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ..core.fingerprint import FINGERPRINT_LEN
from .aliases import check_alias, version_summary
from .champion import apply_gate
from .registration import Registration, register_once, registry_lock  # noqa: F401  (re-exported: defined here before)
from .spec import RegistrySpec
from .tracking import ensure_experiment, filter_literal, flatten_params, numeric_metrics

REGISTRATION_TIMEOUT_S = 300  # the file and sqlite stores are READY at once; remote registries may copy files first


@contextmanager
def mlflow_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (log_model, register_model read only the globals) at these URIs, then restore."""
    # set_tracking_uri/set_registry_uri also export MLFLOW_*_URI, which would leak into later code and subprocesses.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def existing_run_id(client: MlflowClient, run_id: str | None) -> str | None:
    """`run_id` when that run exists and is not deleted (training may have created it), else None."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run_id if run.info.lifecycle_stage == "active" else None


def find_version_by_tag(client: MlflowClient, name: str, key: str, value: str) -> ModelVersion | None:
    """The newest version of `name` whose tag `key` equals `value`, or None."""
    versions = client.search_model_versions(f"name = {filter_literal(name)} and tags.`{key}` = {filter_literal(value)}")
    return max(versions, key=lambda v: int(v.version), default=None)


def log_new_params(client: MlflowClient, run_id: str, params: dict[str, str], log: Callable) -> None:
    """Log params the run lacks; MLflow forbids changing a param, so differing ones are reported and kept."""
    existing = client.get_run(run_id).data.params
    clashes = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
    if clashes:
        log(f"run {run_id} already has different values for params {clashes}; keeping the run's values")
    new = {k: v for k, v in params.items() if k not in existing}
    if new:
        mlflow.log_params(new)


def log_report_artifacts(report_path: Path, loss_curve: Path | None) -> None:
    """Into the active run: the report as Markdown (evaluation/report.md), its samples as an MLflow table
    (evaluation/samples.json, shown in the run's Artifacts and Evaluation views) and the loss curve PNG."""
    import pandas as pd

    from ..evaluation.report import EvaluationReport, report_markdown

    report = EvaluationReport.model_validate_json(report_path.read_text())
    mlflow.log_text(report_markdown(report), "evaluation/report.md")
    if report.samples:
        mlflow.log_table(pd.DataFrame(report.samples), artifact_file="evaluation/samples.json")
    if loss_curve is not None and Path(loss_curve).is_file():
        mlflow.log_artifact(str(loss_curve))


def register_adapter(*, tracking_uri: str, registry_uri: str | None, artifact_location: str | None, experiment: str,
                     spec: RegistrySpec, adapter_dir: Path, base_model_dir: Path, prompt_format: str,
                     params: dict, metrics: dict, report_path: Path, tags: dict[str, str],
                     run_id: str | None = None, log: Callable[[str], None] = print, log_base: bool = True,
                     system_message: str | None = None,
                     loss_curve: Path | None = None) -> Registration:
    """Log the adapter as a pyfunc model, register a new version of `spec.model_name` and point `spec.alias` at it.

    Args:
        tracking_uri, registry_uri, artifact_location, experiment: where MLflow keeps the run and the version.
        spec: model name, alias, the champion gate's metric and margin, whether to copy the base.
        adapter_dir, base_model_dir: the adapter and its 4-bit base.
        prompt_format, system_message: how serving renders requests (the training data's).
        params, metrics: logged on the run (nested dicts are flattened); `metrics` feeds the champion gate.
        report_path: the evaluation report (report.json), logged as a run artifact with a Markdown rendering and
            its samples as an MLflow table.
        tags: lineage tags for the run and the version.
        run_id: the training run to resume, when it still exists.
        log: one line per stage. log_base: as `spec.log_base`.
        loss_curve: the training step's loss-curve PNG, logged as the run's loss_curve.png when it exists.
    Returns:
        the new version, its URIs and the gate's decision.
    Raises:
        ValueError: an alias MLflow reserves.
        RuntimeError: the logged model failed to predict on its input example.
        MlflowException: the registration failed or timed out.
    """
    # Here, not at the top: logging a model loads the serving stack (torch, peft); looking one up does not.
    from .logged_model import hub_base_config, log_adapter_model

    check_alias(spec.alias)
    registry_uri = registry_uri or tracking_uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    experiment_id = ensure_experiment(client, experiment, artifact_location, tracking_uri)
    lineage = {k: str(v) for k, v in tags.items()}
    resume = existing_run_id(client, run_id)
    if run_id and not resume:
        log(f"run {run_id} not found; starting a new run")

    with mlflow_uris(tracking_uri, registry_uri):
        with mlflow.start_run(run_id=resume, experiment_id=None if resume else experiment_id) as run:
            run_id = run.info.run_id
            log_new_params(client, run_id, flatten_params(params), log)
            mlflow.log_metrics(numeric_metrics(metrics))
            mlflow.set_tags(lineage)
            mlflow.log_artifact(str(report_path), artifact_path="evaluation")
            log_report_artifacts(Path(report_path), loss_curve)
            hub_base = None if log_base else hub_base_config(lineage, Path(base_model_dir))
            if not log_base and hub_base is None:
                log(f"base {lineage.get('base_model_id')!r} is not a hub id; logging the 4-bit base with the model")
            info, digest = log_adapter_model(Path(adapter_dir), Path(base_model_dir), prompt_format, hub_base,
                                             system_message)
            log(f"logged model {info.model_uri} in run {run_id}")
        # A short digest to search by; the checksums themselves are the run artifact adapter_checksums.json.
        version_tags = {**lineage, "adapter_digest": digest[:FINGERPRINT_LEN]}
        # Waits until READY and raises on a failed or timed-out registration.
        mv = mlflow.register_model(info.model_uri, spec.model_name,
                                   await_registration_for=REGISTRATION_TIMEOUT_S, tags=version_tags)
    client.set_registered_model_alias(spec.model_name, spec.alias, mv.version)
    log(f"registered {spec.model_name} version {mv.version}, alias {spec.alias!r}")
    gate = apply_gate(client, spec.model_name, mv.version, spec.primary_metric, numeric_metrics(metrics),
                      spec.min_improvement, log=log)
    return Registration(model_name=spec.model_name, version=int(mv.version), alias=spec.alias, run_id=run_id,
                        tracking_uri=tracking_uri, gate_decision=gate.decision,
                        **version_summary(client, spec.model_name, mv.version, spec.alias))
