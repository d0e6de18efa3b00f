"""MLflow tracking helpers shared by training (per-step loss) and registration (one run per adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from ..core.paths import default_mlflow_artifacts

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value (older servers: 500); longer values are cut


def default_artifact_location(tracking_uri: str) -> str | None:
    """Next to an embedded sqlite DB, as in the data home; a tracking server chooses for itself."""
    # Without one, MLflow 3 puts a sqlite-backed experiment's artifacts in ./mlruns under whatever the cwd is.
    if tracking_uri.startswith("sqlite:///"):
        return str(default_mlflow_artifacts(Path(tracking_uri.removeprefix("sqlite:///")).parent))
    return None


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None,
                      tracking_uri: str | None = None) -> str:
    """The id of experiment `name`, created when missing (artifacts at `artifact_location`, or the default)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_location or (default_artifact_location(tracking_uri) if tracking_uri else None)
    return client.create_experiment(name, artifact_location=location)


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts as MLflow params: {'train': {'r': 16}} -> {'train.r': '16'}."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def start_run(tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any],
              tags: dict[str, str] | None = None, artifact_location: str | None = None) -> str:
    """Create a run with flattened params and tags; return its id. The run stays open for later logging."""
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, experiment, artifact_location, tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags or {})
    for key, value in flatten_params(params).items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def code_version() -> str:
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


def resume_or_start_run(run_id_file: Path, tracking_uri: str, experiment: str, run_name: str,
                        params: dict[str, Any], tags: dict[str, str] | None = None,
                        artifact_location: str | None = None) -> str:
    """The run recorded in `run_id_file` when it still exists (a resumed training keeps one loss curve),
    else a new run, recorded there."""
    run_id_file = Path(run_id_file)
    if run_id_file.is_file():
        run_id = run_id_file.read_text().strip()
        try:
            if MlflowClient(tracking_uri).get_run(run_id).info.lifecycle_stage == "active":
                return run_id
        except Exception:  # deleted, or from another tracking server: start afresh
            pass
    run_id = start_run(tracking_uri, experiment, run_name, params, tags, artifact_location)
    run_id_file.parent.mkdir(parents=True, exist_ok=True)
    run_id_file.write_text(run_id)
    return run_id


class TrackingServerUnavailable(RuntimeError):
    pass


def redact_uri(uri: str) -> str:
    """The URI without user:password@, for logs and errors (credentials belong in MLFLOW_TRACKING_* variables)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def check_tracking_server(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """Fail at once, naming the URI, when an HTTP tracking server does not answer (MLflow itself retries for minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError:
        return  # it answered; auth or routing problems surface from MLflow with their own message
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingServerUnavailable(
            f"MLflow tracking server {redact_uri(tracking_uri)} does not answer ({reason}); start it, or point "
            "the mlflow resource's tracking_uri (or MLFLOW_TRACKING_URI) at one that runs") from None
