"""MLflow tracking shared by training (per-step loss) and registration (one run per adapter): where runs go,
how they are opened and resumed, and the lineage tags every run and version carries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..core.paths import default_mlflow_artifacts

if TYPE_CHECKING:  # MLflow is imported where a client is made: a warm run reads the registry without it
    from mlflow.tracking import MlflowClient

# MLflow prints "View run ... at: <tracking URI>/#/..." to stdout when a run on a tracking server ends, user:password@
# included (mlflow/tracking/_tracking_service/client.py _log_url); the steps link runs themselves, without credentials.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
SQLITE_PREFIX = "sqlite:///"  # an embedded registry: one file, one writer at a time
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value (older servers: 500); longer values are cut
# MLflow 3's UI opens an experiment on the view its kind names; without the tag a new experiment opens on the GenAI
# traces page. "finetuning" is one of the UI's machine-learning kinds (it opens on the training runs table).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "finetuning"
DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as a run's description
# Short names for run names, in this order; other changed settings follow as name=value.
RUN_NAME_KEYS = {"r": "r{}", "learning_rate": "lr{}", "max_steps": "{}steps", "num_epochs": "{}ep"}


@dataclass(frozen=True)
class MlflowTarget:
    """Where runs and registered versions go (the mlflow resource resolves it)."""

    tracking_uri: str
    registry_uri: str
    experiment: str
    artifact_location: Optional[str] = None


def lineage_tags(step: str, fingerprint: str, inputs: dict[str, str], dagster_run_id: str) -> dict[str, str]:
    """The lineage-tag policy, in one place: `<step>_fingerprint`, `<input>_fingerprint` per input, and the
    Dagster run that made it. Training runs and registered versions carry these tags."""
    return {f"{step}_fingerprint": fingerprint, **{f"{name}_fingerprint": fp for name, fp in inputs.items()},
            "dagster_run_id": dagster_run_id}


def default_artifact_location(tracking_uri: str) -> str | None:
    """Next to an embedded sqlite DB, as in the data home; a tracking server chooses for itself."""
    # Without one, MLflow 3 puts a sqlite-backed experiment's artifacts in ./mlruns under whatever the cwd is.
    database = sqlite_path(tracking_uri)
    return str(default_mlflow_artifacts(database.parent)) if database is not None else None


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None,
                      tracking_uri: str | None = None) -> str:
    """The id of experiment `name`, created when missing (artifacts at `artifact_location`, or the default)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older version or by hand: mark it once
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    location = artifact_location or (default_artifact_location(tracking_uri) if tracking_uri else None)
    return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def short_number(value: Any) -> str:
    """A setting as a run name shows it: 0.0002 -> 2e-4, 600 -> 600, 0.05 -> 0.05, True -> true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value and abs(value) < 1e-3:  # learning rates: 2e-4 reads better than 0.0002
            mantissa, exponent = f"{value:.3e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def run_name(settings: dict[str, Any], defaults: dict[str, Any], max_extra: int = 3) -> str:
    """A run name from what sets this run apart: rank, learning rate and length always (`r16-lr2e-4-600steps`),
    then up to `max_extra` other settings that differ from their defaults (`alpha=32`), in field order.

    Args:
        settings: the training settings (TrainSpec.model_dump()).
        defaults: the same fields at their defaults (fields without one are left out).
    """
    parts = [fmt.format(short_number(settings[k])) for k, fmt in RUN_NAME_KEYS.items() if settings.get(k) is not None]
    extra = [f"{k}={short_number(v)}" for k, v in settings.items()
             if k not in RUN_NAME_KEYS and k in defaults and v != defaults[k]]
    return "-".join(parts + extra[:max_extra] + (["..."] if len(extra) > max_extra else []))


def run_description(settings: dict[str, Any], defaults: dict[str, Any], inputs: dict[str, str]) -> str:
    """Markdown for the run's description: the settings that differ from the defaults and the input fingerprints."""
    changed = [f"- `{k}`: {v!r} (default {defaults[k]!r})" for k, v in settings.items()
               if k in defaults and v != defaults[k]]
    lines = ["QLoRA adapter trained by the qlora_adapter asset.", "", "Settings changed from the defaults:",
             *(changed or ["- none"]), "", "Inputs (fingerprints):", *[f"- {k}: `{v}`" for k, v in inputs.items()]]
    return "\n".join(lines)


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, leaves untouched: {'train': {'r': 16}} -> {'train.r': 16}."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts as MLflow params: {'train': {'r': 16}} -> {'train.r': '16'}, cut to MAX_PARAM_CHARS."""
    return {name: str(value)[:MAX_PARAM_CHARS] for name, value in flatten(params, prefix).items()}


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Nested dicts as dotted keys; only numbers are metrics (strings and lists belong in the report)."""
    return {name: float(value) for name, value in flatten(metrics).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def start_run(tracking_uri: str, experiment: str, name: str, params: dict[str, Any],
              tags: dict[str, str] | None = None, artifact_location: str | None = None) -> str:
    """Create a run with flattened params and tags; return its id. The run stays open for later logging."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, experiment, artifact_location, tracking_uri)
    run = client.create_run(experiment_id, run_name=name, tags=tags or {})
    for key, value in flatten_params(params).items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def project_release() -> str:
    """The project's version plus the git commit it runs from, when there is one."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from ..core.paths import REPO_ROOT

    try:
        release = version("qlora-pipeline")
    except PackageNotFoundError:
        release = "unreleased"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{release}+{sha}" if sha else release


def resume_or_start_run(run_id_file: Path, tracking_uri: str, experiment: str, name: str,
                        params: dict[str, Any], tags: dict[str, str] | None = None,
                        artifact_location: str | None = None) -> str:
    """The run recorded in `run_id_file` when it still exists (a resumed training keeps one loss curve),
    else a new run, recorded there."""
    from mlflow.tracking import MlflowClient

    run_id_file = Path(run_id_file)
    if run_id_file.is_file():
        run_id = run_id_file.read_text().strip()
        try:
            if MlflowClient(tracking_uri).get_run(run_id).info.lifecycle_stage == "active":
                return run_id
        except Exception:  # deleted, or from another tracking server: start afresh
            pass
    run_id = start_run(tracking_uri, experiment, name, params, tags, artifact_location)
    run_id_file.parent.mkdir(parents=True, exist_ok=True)
    run_id_file.write_text(run_id)
    return run_id


class TrackingServerUnavailable(RuntimeError):
    """An HTTP tracking server did not answer its health check: fail at once, before any work."""


class RunNotStarted(RuntimeError):
    """The tracking server answered but did not take the run; worth retrying, nothing has been trained yet."""


def redact_uri(uri: str) -> str:
    """The URI without user:password@, for logs and errors (credentials belong in MLFLOW_TRACKING_* variables)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def server_problem(tracking_uri: str, timeout_s: float = 10.0) -> Optional[BaseException]:
    """Why an HTTP tracking server does not answer its health check (the connection error), or None when it
    answers or the URI is no HTTP server (embedded stores need none)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    try:
        # Without user:password@: urllib takes them for part of the host name ("Name or service not known"); the
        # health check needs no login, and a 401 counts as an answer.
        with urllib.request.urlopen(f"{redact_uri(tracking_uri).rstrip('/')}/health", timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError:
        return None  # it answered; auth or routing problems surface from MLflow with their own message
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return reason if isinstance(reason, BaseException) else err
    return None


def check_tracking_server(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """Fail at once, naming the URI, when an HTTP tracking server does not answer (MLflow itself retries for minutes).

    Raises:
        TrackingServerUnavailable: with the URI (credentials removed) and what to do.
    """
    problem = server_problem(tracking_uri, timeout_s)
    if problem is not None:
        raise TrackingServerUnavailable(
            f"MLflow tracking server {redact_uri(tracking_uri)} does not answer ({problem}); start it, or point "
            "the mlflow resource's tracking_uri (or MLFLOW_TRACKING_URI) at one that runs")


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of an embedded `sqlite:///` URI; None for any other URI."""
    return Path(uri.removeprefix(SQLITE_PREFIX)) if uri.startswith(SQLITE_PREFIX) else None


def filter_literal(text: str) -> str:
    """A string literal for MLflow's search filter, which has no escapes: it takes '...' or "...".

    Raises:
        ValueError: a value holding both quote characters, which the filter language cannot express.
    """
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"MLflow's search filter cannot express a value with both quote characters: {text!r}")


def open_training_run(run_id_file: Path, target: MlflowTarget, fingerprint: str, inputs: dict[str, str],
                      params: dict[str, Any], dagster_run_id: str, name: str | None = None,
                      description: str | None = None) -> str:
    """The MLflow run a training step logs its loss to: the one recorded beside its checkpoints when it still
    exists (a resumed training keeps one loss curve), else a new run called `name` (default: after the adapter's
    fingerprint) with `description` as its note.

    Args:
        run_id_file: where the run id is kept, beside the checkpoints.
        target: tracking URI, experiment and artifact location.
        fingerprint, inputs: the adapter's fingerprint and its inputs' (lineage tags).
        params: logged on a new run (nested dicts are flattened).
        dagster_run_id: the Dagster run, tagged for lineage.
    Returns:
        the run id.
    Raises:
        TrackingServerUnavailable: an HTTP server that does not answer (fail at once).
        RunNotStarted: the server answered but creating or reading the run failed (retry).
    """
    check_tracking_server(target.tracking_uri)  # before any training, not after hours of it
    tags = {**lineage_tags("adapter", fingerprint, inputs, dagster_run_id),
            **({DESCRIPTION_TAG: description} if description else {})}
    try:
        return resume_or_start_run(run_id_file, target.tracking_uri, target.experiment,
                                   name or f"adapter-{fingerprint}",
                                   params, tags, target.artifact_location)
    except Exception as err:  # the tracking server may be briefly away
        raise RunNotStarted(f"MLflow at {redact_uri(target.tracking_uri)} did not take the run ({err})") from err
