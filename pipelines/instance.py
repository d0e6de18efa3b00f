"""The Dagster instance: $DAGSTER_HOME when set, else `$QLORA_HOME/dagster` with the project's dagster.yaml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from ops.paths import REPO_ROOT, qlora_home

INSTANCE_TEMPLATE = REPO_ROOT / "dagster.yaml"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or qlora_home() / "dagster").resolve()


def get_instance() -> dg.DagsterInstance:
    """A persistent instance, so runs and materializations outlive the process and show in the UI."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and INSTANCE_TEMPLATE.exists():
        shutil.copy(INSTANCE_TEMPLATE, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()
