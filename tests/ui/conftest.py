"""One `dagster dev` for the UI tests (it takes one to two minutes to start on a loaded 2-core machine)."""

from __future__ import annotations

import pytest

from ops.core.paths import default_tracking_uri
from tests import dagster_dev as dev
from tests.run_configs import tiny_run_config

JOB = "qlora_pipeline"
MODEL_NAME = "ui-test"


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory):
    """`dagster dev` with its own instance and data home: {"port", "log", "proc", "qlora_home", "tmp"}."""
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "qlora-home"
    env = {"DAGSTER_HOME": str(dev.dagster_home(tmp)), "QLORA_HOME": str(home)}
    with dev.dagster_dev(tmp, env) as server:
        yield {**server, "qlora_home": home, "tmp": tmp}


@pytest.fixture(scope="package")
def finished_run(ui_server, tiny_base_dir):
    """The tiny pipeline launched through GraphQL, as the launchpad's Launch button does, and finished: its run id."""
    # One process: step subprocesses would each import torch.
    config = {"execution": {"config": {"in_process": {}}}, **tiny_run_config(MODEL_NAME, tiny_base_dir)}
    launched = dev.launch_run(ui_server["port"], JOB, config)
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    dev.wait_for_run(ui_server["port"], run_id, 300, ui_server["log"])
    return run_id


@pytest.fixture(scope="package")
def mlflow_port(ui_server, finished_run):
    """The MLflow UI over the store the finished run wrote to."""
    with dev.mlflow_ui(ui_server["tmp"], default_tracking_uri(ui_server["qlora_home"])) as port:
        yield port
