"""Register a trained adapter in MLflow: a run, a logged pyfunc model, a registry version with lineage tags, an alias.

MLflow 3 registers *logged models* (`models:/<model_id>`), not plain run artifacts, so the adapter is logged
as the pyfunc model in `ops.pyfunc_model`, which carries the 4-bit base, the adapter, the adapter's checksums
and its own copy of the serving code (ops/model_code.py).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from . import pyfunc_model
from .base_model import _looks_like_path
from .champion import apply_gate
from .fingerprint import FINGERPRINT_LEN, file_checksums
from .model_code import importable, package_serving_code
from .specs import RegistrySpec
from .tracking import ensure_experiment, flatten_params

MODEL_ARTIFACT = "model"
REGISTRATION_TIMEOUT_S = 300  # the file and sqlite stores are READY at once; remote registries may copy files first
RESERVED_ALIASES = ("latest",)  # MLflow also reserves version-like aliases: v1, V2, ...


def check_alias(alias: str) -> str:
    """Reject aliases MLflow reserves, before any run is created."""
    if alias.lower() in RESERVED_ALIASES or (alias[:1] in "vV" and alias[1:].isdigit()):
        raise ValueError(f"alias {alias!r} is reserved by MLflow ('latest' and v<number>); choose another")
    return alias


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested dicts become dotted keys; only numbers are metrics (strings and lists belong in the report)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(numeric_metrics(value, prefix=f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


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


def quote(text: str) -> str:
    """A string literal for MLflow's search filter, which has no escapes: it takes '...' or "..."."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"MLflow's search filter cannot express a value with both quote characters: {text!r}")


def find_version_by_tag(client: MlflowClient, name: str, key: str, value: str) -> ModelVersion | None:
    """The newest version of `name` whose tag `key` equals `value`, or None."""
    versions = client.search_model_versions(f"name = {quote(name)} and tags.`{key}` = {quote(value)}")
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


class ServingCheck(logging.Handler):
    """Collects MLflow's warning that the logged model failed to predict on its input example."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Failed to validate serving input" in record.getMessage():
            self.failures.append(record.getMessage())


def log_adapter_model(adapter_dir: Path, base_model_dir: Path, prompt_format: str, hub_base: dict | None = None,
                      system_message: str | None = None):
    """Log the pyfunc model (base, adapter, checksums, serving code) under the active run.

    With `hub_base` ({"base_model_id", "base_model_revision"}) the 4-bit base is not copied: the model records
    the hub id, revision and quantization config, and loading quantizes the hub checkpoint the same way.
    `system_message` (chat data whose rows all had it) becomes serving's default system message.
    Returns:
        (MLflow's ModelInfo, the sha256 of the adapter checksums file the model verifies at load).
    """
    # MLflow loads the logged model and predicts on the input example, but only warns when that fails;
    # a model that cannot serve must not be registered, so the warning becomes an error here.
    check, mlflow_logger = ServingCheck(), logging.getLogger("mlflow.models.model")
    mlflow_logger.addHandler(check)
    try:
        info, digest = _log_pyfunc(adapter_dir, base_model_dir, prompt_format, hub_base, system_message)
    finally:
        mlflow_logger.removeHandler(check)
    if check.failures:
        raise RuntimeError(f"the logged model {info.model_uri} failed to predict on its input example: "
                           f"{check.failures[0][-2000:]}")
    return info, digest


def hub_base_config(tags: dict[str, str], base_model_dir: Path) -> dict | None:
    """Hub id, revision and bnb config for a model that loads its base from the hub; None for local bases."""
    model_id = tags.get("base_model_id", "")
    if not model_id or model_id.startswith("embedded:") or _looks_like_path(model_id):
        return None
    quantization = json.loads((Path(base_model_dir) / "config.json").read_text())["quantization_config"]
    return {"base_model_id": model_id, "base_model_revision": tags.get("base_model_revision") or "main",
            "quantization_config": quantization}


def _log_pyfunc(adapter_dir: Path, base_model_dir: Path, prompt_format: str, hub_base: dict | None,
                system_message: str | None):
    with tempfile.TemporaryDirectory(prefix="qlora-model-") as tmp:
        package, stub = package_serving_code(Path(tmp) / "code")
        checksums = Path(tmp) / f"{pyfunc_model.CHECKSUMS_ARTIFACT}.json"
        checksums.write_text(json.dumps(file_checksums(Path(adapter_dir)), indent=2, sort_keys=True) + "\n")
        mlflow.log_artifact(str(checksums))  # the run's record of what was registered
        artifacts = {"adapter": str(adapter_dir), pyfunc_model.CHECKSUMS_ARTIFACT: str(checksums)}
        if not hub_base:
            artifacts["base_model"] = str(base_model_dir)
        digest = pyfunc_model.checksums_digest(checksums)
        # MLflow also logs every model_config key as a run param, so the config holds the checksums' digest
        # (verified at load together with the file), not the checksums themselves.
        config = {"prompt_format": prompt_format, pyfunc_model.CHECKSUMS_DIGEST_KEY: digest,
                  **({"system_message": system_message} if system_message is not None else {}), **(hub_base or {})}
        with importable(package):  # MLflow runs the stub at log time
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(stub),
                code_paths=[str(package)],
                artifacts=artifacts,
                model_config=config,
                signature=pyfunc_model.signature(),
                input_example=pyfunc_model.input_example(prompt_format),
                pip_requirements=pyfunc_model.pip_requirements(),
            )
    return info, digest


def version_summary(client: MlflowClient, name: str, version: int | str, alias: str) -> dict:
    """How to load a registered version, and where its aliases stand.

    `model_uri` names the version itself (models:/NAME/VERSION), so it always loads this adapter; an alias
    (`alias_uri`) moves with later registrations and the gate, so it may have moved on (`alias_version`).
    """
    aliases = {a: int(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    return {"model_uri": f"models:/{name}/{version}", "alias_uri": f"models:/{name}@{alias}",
            "alias_version": aliases.get(alias),
            "version_aliases": sorted(a for a, v in aliases.items() if v == int(version))}


def register_adapter(*, tracking_uri: str, registry_uri: str | None, artifact_location: str | None, experiment: str,
                     spec: RegistrySpec, adapter_dir: Path, base_model_dir: Path, prompt_format: str,
                     params: dict, metrics: dict, report_path: Path, tags: dict[str, str],
                     run_id: str | None = None, log: Callable[[str], None] = print, log_base: bool = True,
                     system_message: str | None = None) -> dict:
    """Log the adapter as a pyfunc model, register a new version of `spec.model_name` and point `spec.alias` at it.

    Returns:
        model_name, version, alias, run_id, tracking_uri, gate_decision, and `version_summary`'s URIs
        (`model_uri` names the version: models:/NAME/VERSION).
    """
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
    return {
        "model_name": spec.model_name,
        "version": int(mv.version),
        "alias": spec.alias,
        "run_id": run_id,
        "tracking_uri": tracking_uri,
        "gate_decision": gate.decision,
        **version_summary(client, spec.model_name, mv.version, spec.alias),
    }
