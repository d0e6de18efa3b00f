"""qlora_adapter's torchrun through the `training_launcher` resource: the Kubernetes location swaps in a training pod
when its settings say `training_pod: true`, and materializing qlora_adapter with it sends the launch command to the
stand-in Kubernetes API (tests/pipelines/fake_k8s_api.py) as a pod with nproc_per_node GPUs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets import PIPELINE_ASSETS
from ops.core.paths import REPO_ROOT
from pipelines.definitions import RESOURCES
from pipelines.k8s import executor_config
from pipelines.k8s_launcher import K8sTrainingLauncher
from pipelines.k8s_settings import K8sSettings
from resources import BaseModelResource, TrainingLauncher
from tests.pipelines.fake_k8s_api import fake_k8s_api
from tests.pipelines.test_k8s import SETTINGS
from tests.run_configs import tiny_run_config

# The team settings with training pods: qlora_adapter's step pod gets no GPU, its training pod nproc_per_node.
POD_SETTINGS = {**SETTINGS, "training_pod": True,
                "gpu": {**SETTINGS["gpu"], "steps": {**SETTINGS["gpu"]["steps"], "qlora_adapter": 0,
                                                     "adapter_evaluation": 1}}}


def test_the_k8s_location_launches_training_in_a_pod_only_when_the_settings_say_so():
    from pipelines.k8s_definitions import build_definitions, step_names

    settings = K8sSettings(**POD_SETTINGS)
    defs = build_definitions(settings)
    launcher = defs.resources["training_launcher"]
    assert isinstance(launcher, K8sTrainingLauncher) and launcher.settings() == settings
    dg.Definitions.validate_loadable(defs)
    # The step pod stays off the GPU nodes; the ranks in the training pod still insist on CUDA.
    assert "qlora_adapter" not in executor_config(settings, step_names())["per_step_k8s_config"]
    assert defs.resources["gpu"].require_gpu
    # Without the setting the step runs torchrun itself, as locally.
    plain = build_definitions(K8sSettings(**{**POD_SETTINGS, "training_pod": False}))
    assert type(plain.resources["training_launcher"]) is TrainingLauncher
    assert not plain.resources["gpu"].require_gpu  # qlora_adapter's step pod, with 0 GPUs, would train on a CPU


@pytest.mark.slow  # the dataset and the 4-bit base are built first (tiny model)
def test_qlora_adapter_sends_its_launch_command_as_a_training_pod(tmp_path, tiny_base_dir, qlora_home):
    settings = K8sSettings(**POD_SETTINGS)
    config = tiny_run_config("k8s-launcher", train={"nproc_per_node": 2})
    del config["ops"]["adapter_evaluation"]  # not selected
    with fake_k8s_api(tmp_path) as (api, kubeconfig):  # refuses the pod: what a cluster would receive is recorded
        launcher = K8sTrainingLauncher.from_settings(settings, kubeconfig_file=str(kubeconfig), poll_interval=0.1)
        resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir)),
                     "training_launcher": launcher}
        result = dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config, raise_on_error=False,
                                selection=["training_dataset", "quantized_base_model", "qlora_adapter"])
    assert not result.success  # the stand-in creates nothing
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "qlora_adapter"
    assert failure.step_failure_data.error.cause.cls_name == "ForbiddenException"
    (pod,) = api.created("/pods")
    (container,) = pod["spec"]["containers"]
    # The command is ops/train/launch.py's launch_command for machine 0: this interpreter, -m ops.train.launch, the
    # job file and failure file on the data home, which the training pod mounts as the step's does.
    command = container["command"]
    assert command[:4] == [sys.executable, "-m", "ops.train.launch", "--job"]
    assert command[5:8] == ["--node-rank", "0", "--failure-file"]
    job_file = Path(command[4])
    assert job_file.is_relative_to(qlora_home) and Path(command[8]).is_relative_to(qlora_home)
    job = json.loads(job_file.read_text())
    assert job["launch"]["nproc_per_node"] == 2
    gpus = {"nvidia.com/gpu": "2"}  # = nproc_per_node, not gpu.steps.qlora_adapter (0: the step pod's)
    assert container["resources"] == {"requests": {"cpu": "24", "memory": "200Gi", **gpus},
                                      "limits": {"memory": "200Gi", **gpus}}
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert container["image"] == "registry.test/team/qlora:7.7.7"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "DAGSTER_PIPES_CONTEXT" in env and env["QLORA_HOME"] == "/mnt/team/qlora"


@pytest.mark.slow  # trains the tiny adapter in the stand-in's "pod" (a local process)
def test_qlora_adapter_trains_in_the_pod_and_reports_back_through_its_log(tmp_path, tiny_base_dir, monkeypatch):
    """The whole round trip: the stand-in's kubelet runs the training pod's command (the launcher, torchrun, one
    rank) with the pod's env; rank 0's Pipes reports arrive through the pod log, and the summary it writes on the
    shared data home becomes the step's result."""
    data = tmp_path / "volume"  # the data claim, mounted at data_path in the step's "pod" (this process) and the pod
    monkeypatch.setenv("QLORA_HOME", str(data / "qlora"))
    settings = K8sSettings(**{**POD_SETTINGS, "data_path": str(data)})
    config = tiny_run_config("k8s-pod-training", train={"nproc_per_node": 1})
    del config["ops"]["adapter_evaluation"]
    secrets = {"team-secrets": {}, "team-env": {}}  # envFrom of the pod: nothing the training needs
    with fake_k8s_api(tmp_path, kubelet=True, secrets=secrets, cwd=REPO_ROOT) as (api, kubeconfig):
        launcher = K8sTrainingLauncher.from_settings(settings, kubeconfig_file=str(kubeconfig), poll_interval=0.2)
        resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir)),
                     "training_launcher": launcher}
        with dg.instance_for_test() as instance:
            result = dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config, instance=instance,
                                    selection=["training_dataset", "quantized_base_model", "qlora_adapter"])
            lines = [e.user_message for e in instance.all_logs(result.run_id) if e.step_key == "qlora_adapter"]
    (pod,) = api.pods.values()
    assert pod.proc.returncode == 0 and pod.body["spec"]["containers"][0]["command"][1:3] == ["-m", "ops.train.launch"]
    metadata = result.asset_materializations_for_node("qlora_adapter")[0].metadata
    assert metadata["steps"].value == 2 and metadata["world_size"].value == 1
    # rank 0's lines, read from the pod's log by PipesK8sClient
    assert any(line.startswith("step 2/2  loss") for line in lines)
    assert any("training in a pod with 1 GPU(s)" in line for line in lines)
