"""Where the pipeline keeps things: one data home (`QLORA_HOME`, default `./.qlora`) for everything it writes."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # ops/core/paths.py -> the repository
BUNDLED_DATASET = REPO_ROOT / "data" / "instructions.jsonl"


def qlora_home() -> Path:
    """The data home: artifacts, the embedded MLflow registry and (unless DAGSTER_HOME is set) Dagster's instance."""
    return Path(os.environ.get("QLORA_HOME", ".qlora")).expanduser().resolve()


def artifacts_dir(home: Path | None = None) -> Path:
    return (home or qlora_home()) / "artifacts"


def default_tracking_uri(home: Path | None = None) -> str:
    # MLflow's registry needs a database backend; an embedded sqlite file is enough for one machine.
    return f"sqlite:///{(home or qlora_home()) / 'mlflow.db'}"


def default_mlflow_artifacts(home: Path | None = None) -> Path:
    return (home or qlora_home()) / "mlflow-artifacts"
