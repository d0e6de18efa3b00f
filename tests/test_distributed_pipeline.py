"""The qlora_adapter step under torchrun through Dagster: two machines on loopback (this step plus the command it
logs for machine 1), and a rank killed mid-training (one-line error, the rerun resumes from the last checkpoint)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ops.core.paths import REPO_ROOT
from ops.train.worker import KILL_ENV
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_on_loopback_train_one_adapter_and_register_one_version(tiny_base_dir, qlora_home, tmp_path):
    config = tmp_path / "run.yaml"
    train = {"max_steps": 3, "batch_size": 4, "nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{free_port()}"}
    config.write_text(yaml.safe_dump(tiny_run_config("two-nodes", tiny_base_dir, train=train)))
    env = {**os.environ, "QLORA_HOME": str(qlora_home), "PYTHONPATH": str(REPO_ROOT)}
    node0 = subprocess.Popen([sys.executable, "-m", "pipelines.run", str(config)], cwd=REPO_ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(node0.stdout), daemon=True)
    reader.start()
    lines, node1 = [], None
    try:
        for line in node0.stderr:  # the runner's step lines go to the terminal's stream
            lines.append(line)
            found = re.search(r"machine 1 of 2: run  (.+)$", line.strip())
            if found and node1 is None:  # what a user pastes on machine 1 (here, the same machine)
                node1 = subprocess.Popen(found.group(1), shell=True, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
        node0.wait(timeout=600)
        reader.join(timeout=10)
        assert node1 is not None, "".join(lines)[-3000:]
        node1_out = node1.communicate(timeout=120)[0]
    finally:
        for proc in (node0, node1):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, 9)
    assert node0.returncode == 0, "".join(lines)[-3000:] + "".join(stdout)[-2000:]
    assert node1.returncode == 0, node1_out[-3000:]
    assert node1_out.rstrip().splitlines()[-1] == \
        "machine 1 of 2: its 1 rank(s) finished; machine 0's step saves the adapter"
    assert stdout[-1].strip() == "model_uri: models:/two-nodes/1"

    import json

    from mlflow.tracking import MlflowClient

    summary = json.loads(next((qlora_home / "artifacts" / "qlora_adapter").glob("*/train_summary.json")).read_text())
    assert (summary["world_size"], summary["steps"]) == (2, 3)
    from ops.core.paths import default_tracking_uri

    client = MlflowClient(default_tracking_uri(qlora_home))
    versions = client.search_model_versions("name='two-nodes'")
    assert len(versions) == 1
    training_runs = [r for e in client.search_experiments()
                     for r in client.search_runs([e.experiment_id]) if "train_loss" in r.data.metrics]
    # rank 0 (machine 0) logged the loss to the step's run, and that run holds the one registered version
    assert len(training_runs) == 1 and versions[0].run_id == training_runs[0].info.run_id


def step_logs(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(run_id))


def test_a_killed_rank_fails_the_step_in_one_line_and_the_rerun_resumes(tiny_base_dir, monkeypatch):
    from assets import PIPELINE_ASSETS
    from pipelines.console import failures
    from pipelines.definitions import RESOURCES
    from resources import BaseModelResource

    resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir))}
    config = tiny_run_config("killed-rank", train={"max_steps": 8, "batch_size": 4, "save_steps": 2,
                                                   "nproc_per_node": 2})
    selection = ["training_dataset", "quantized_base_model", "qlora_adapter"]
    config = {"ops": {step: section for step, section in config["ops"].items() if step in selection}}
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setenv(KILL_ENV, "1:5")  # rank 1 SIGKILLs itself after step 5, before any step-6 checkpoint
    started = time.time()
    killed = dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config,
                            selection=selection, instance=instance, raise_on_error=False)
    assert not killed.success
    [line] = failures(killed.all_events)
    assert re.fullmatch(r"error: step qlora_adapter failed: TrainingProcessError: training failed: rank 1 \(pid \d+\) "
                        r"was killed by SIGKILL; the rerun resumes from checkpoint-4", line), line
    failed_in = time.time() - started

    monkeypatch.delenv(KILL_ENV)
    rerun = dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config,
                           selection=selection, instance=instance)
    assert rerun.success
    assert "resuming from checkpoint-4 (step 4 of 8 steps)" in step_logs(instance, rerun.run_id)
    adapter = {e.step_materialization_data.materialization.asset_key.to_user_string():
               e.step_materialization_data.materialization.metadata for e in rerun.get_asset_materialization_events()}
    assert adapter["qlora_adapter"]["steps"].value == 8 and adapter["qlora_adapter"]["world_size"].value == 2
    print(f"killed run failed after {failed_in:.1f}s; the rerun resumed from checkpoint-4")
