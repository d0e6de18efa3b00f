"""MLflow tracking helpers shared by training (per-step loss) and registration (one run per adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from ops.paths import default_mlflow_artifacts

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

    from ops.paths import REPO_ROOT

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
