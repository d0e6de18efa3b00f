"""Read the model registry for people: which models, which versions, what each version was trained from and scored."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ..core.paths import default_tracking_uri
from .tracking import filter_literal, redact_uri, server_problem, sqlite_path

PRIMARY_METRICS = ("tuned.eval_loss", "tuned.exact_match")
SHOW_CHARS = 100  # longer values (an older registration's checksum JSON tag) are cut in `show`; --json has them whole
# Fail in seconds when a server does not answer; MLflow's defaults retry for minutes. Users may override.
FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class LookupFailed(Exception):
    """A lookup failed for a reason the user can fix; its message is the one line the CLI prints."""


@dataclass(frozen=True)
class ModelRef:
    """NAME@ALIAS or NAME/VERSION, as typed on the command line."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def parse_ref(text: str) -> ModelRef:
    """Split NAME@ALIAS or NAME/VERSION; anything else is a usage error."""
    if "@" in text:
        name, alias = text.rsplit("@", 1)
        if name and alias:
            return ModelRef(name, alias=alias)
    match = re.fullmatch(r"(.+)/(\d+)", text)
    if match:
        return ModelRef(match[1], version=match[2])
    raise LookupFailed(f"{text!r} is not NAME@ALIAS or NAME/VERSION")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded sqlite registry under QLORA_HOME."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def connect(uri: str) -> MlflowClient:
    """A client for `uri`, after checking that the registry is there (a missing sqlite file would be created)."""
    for key, value in FAST_FAIL_ENV.items():
        os.environ.setdefault(key, value)
    database = sqlite_path(uri)
    if database is not None and not database.is_file():
        raise LookupFailed(f"no registry at {uri} (set MLFLOW_TRACKING_URI or QLORA_HOME)")
    problem = server_problem(uri, timeout_s=float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]))
    if problem is not None:
        raise LookupFailed(f"tracking server {redact_uri(uri)} does not answer ({type(problem).__name__})")
    return MlflowClient(tracking_uri=uri)


def registered_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise LookupFailed(f"no registered model named {name!r}") from None
        raise


def resolve(client: MlflowClient, ref: ModelRef) -> ModelVersion:
    """The model version `ref` names, or LookupFailed saying what exists instead."""
    model = registered_model(client, ref.name)
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    if ref.alias:
        known = ", ".join(sorted(model.aliases)) or "none"
        raise LookupFailed(f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {known})")
    raise LookupFailed(f"model {ref.name!r} has no version {ref.version}")


def _created(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def list_models(client: MlflowClient) -> list[dict[str, Any]]:
    """One row per registered model: name, newest version, aliases, last update."""
    rows = []
    for model in client.search_registered_models(order_by=["name ASC"]):
        versions = [int(v.version) for v in model.latest_versions or []]
        rows.append({"name": model.name, "latest_version": max(versions, default=None),
                     "aliases": dict(sorted((a, int(v)) for a, v in (model.aliases or {}).items())),
                     "updated": _created(model.last_updated_timestamp)})
    return rows


def list_versions(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """One row per version of `name`, newest first, with aliases, primary metrics and lineage."""
    # search_model_versions leaves `aliases` empty on some stores; the registered model always has them.
    aliases = registered_model(client, name).aliases or {}
    rows = []
    for mv in sorted(client.search_model_versions(f"name = {filter_literal(name)}"), key=lambda v: -int(v.version)):
        metrics = _run_metrics(client, mv.run_id)
        rows.append({"version": int(mv.version), "aliases": sorted(a for a, v in aliases.items() if int(v) == int(mv.version)),
                     **{m: metrics.get(m) for m in PRIMARY_METRICS},
                     "base_model": mv.tags.get("base_model_id"), "dataset": mv.tags.get("dataset_fingerprint"),
                     "created": _created(mv.creation_timestamp)})
    return rows


def _run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return client.get_run(run_id).data.metrics
    except MlflowException:  # the run was deleted; the version still lists
        return {}


def version_details(client: MlflowClient, mv: ModelVersion) -> dict[str, Any]:
    """Everything `qlora show` prints: the version, its lineage tags, its run's params and metrics."""
    run = client.get_run(mv.run_id) if mv.run_id else None
    return {"name": mv.name, "version": int(mv.version), "aliases": sorted(mv.aliases or []),
            "status": mv.status, "created": _created(mv.creation_timestamp), "run_id": mv.run_id,
            "source": mv.source, "tags": dict(sorted(mv.tags.items())),
            "params": dict(sorted(run.data.params.items())) if run else {},
            "metrics": dict(sorted(run.data.metrics.items())) if run else {}}


def table(rows: list[dict[str, Any]]) -> str:
    """Rows as an aligned text table, columns in the rows' key order."""
    if not rows:
        return "(none)"
    cells = [[cell(v) for v in row.values()] for row in rows]
    header = list(rows[0].keys())
    widths = [max(len(str(c)) for c in column) for column in zip(header, *cells)]
    lines = [header, *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def shorten(text: str, limit: int = SHOW_CHARS) -> str:
    """`text`, or its start and its length when it is longer than `limit` characters (one line in a table)."""
    return text if len(text) <= limit else f"{text[:limit - 24]}... ({len(text):,} characters)"


def cell(value: Any) -> str:
    if isinstance(value, float):
        return _metric(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(value) or "-"
    return "-" if value is None else str(value)
