"""The real integration paths, end to end up to the Kubernetes API: a run of the Kubernetes code location's job
(its k8s_job_executor, on an instance with the K8sRunLauncher) and an asset calling run_training_pod
(PipesK8sClient) send their Job and Pod to a loopback stand-in API server (tests/pipelines/fake_k8s_api.py), which
records them and refuses them: what a cluster would receive is asserted. Last, the stand-in runs the training pod's
command as a local process, and its Pipes reports come back through the pod log."""

from __future__ import annotations

import sys

import dagster as dg
import pytest
import yaml
from dagster_k8s import PipesK8sClient

from ops.core.paths import REPO_ROOT
from pipelines.k8s import run_training_pod
from pipelines.k8s_definitions import JOB_NAME
from pipelines.k8s_settings import DEFAULT_SETTINGS_FILE, K8sSettings, load_k8s_settings
from tests.pipelines.fake_k8s_api import fake_k8s_api
from tests.pipelines.test_k8s import SETTINGS, env_from_names


def k8s_job() -> dg.JobDefinition:
    """The Kubernetes location's job, built from the settings file $QLORA_K8S_SETTINGS names (reconstructable)."""
    from pipelines.k8s_definitions import build_definitions

    return build_definitions(load_k8s_settings()).resolve_job_def(JOB_NAME)


@pytest.fixture
def settings_file(tmp_path, monkeypatch):
    path = tmp_path / "k8s.yaml"
    path.write_text(yaml.safe_dump({**SETTINGS, "image": "registry.test/from-the-file:1"}))
    monkeypatch.setenv("QLORA_K8S_SETTINGS", str(path))
    monkeypatch.setenv("QLORA_K8S_IMAGE", "registry.test/from-ci:42")  # the override wins over the file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.test:5000")  # the location's mlflow resource needs it
    return path


def test_the_executor_sends_the_training_step_to_a_gpu_node(tmp_path, settings_file):
    with fake_k8s_api(tmp_path) as (api, kubeconfig):
        launcher = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "instance_config_map": "dagster-instance", "service_account_name": "dagster", "job_namespace": "ml-train",
            "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}}
        with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"run_launcher": launcher}) as instance:
            result = dg.execute_job(dg.reconstructable(k8s_job), instance, raise_on_error=False,
                                    asset_selection=[dg.AssetKey("qlora_adapter")])
    assert not result.success  # the stand-in refuses to create anything
    assert [(m, p) for m, p, _ in api.requests][0] == ("POST", "/apis/batch/v1/namespaces/ml-train/jobs")
    (job,) = api.created("/jobs")
    assert job["metadata"]["labels"]["dagster/op"] == "qlora_adapter"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.test/from-ci:42"
    assert container["args"][:3] == ["dagster", "api", "execute_step"]
    assert container["resources"] == {"requests": {"cpu": "24", "memory": "200Gi", "nvidia.com/gpu": "4"},
                                      "limits": {"memory": "200Gi", "nvidia.com/gpu": "4"}}
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}]
    assert pod["serviceAccountName"] == "trainer"
    assert {e.get("secretRef", {}).get("name") for e in container["envFrom"]} >= {"team-secrets"}
    assert {e.get("configMapRef", {}).get("name") for e in container["envFrom"]} >= {"team-env"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QLORA_HOME"] == "/mnt/team/qlora" and env["DAGSTER_RUN_STEP_KEY"] == "qlora_adapter"
    assert {"name": "qlora-data", "persistentVolumeClaim": {"claimName": "team-data"}} in pod["volumes"]


def test_run_training_pod_sends_one_pod_through_pipes(tmp_path):
    settings = K8sSettings(**SETTINGS)
    command = ["torchrun", "--nproc_per_node=4", "-m", "ops.train"]
    with fake_k8s_api(tmp_path) as (api, kubeconfig):
        client = PipesK8sClient(load_incluster_config=False, kubeconfig_file=str(kubeconfig), poll_interval=0.1)

        @dg.asset
        def adapter_in_a_pod(context):  # unannotated: this module's annotations are strings
            run_training_pod(context, command, settings, client=client)

        result = dg.materialize([adapter_in_a_pod], raise_on_error=False)
    assert not result.success
    (pod,) = api.created("/pods")
    assert [p for m, p, _ in api.requests if m == "POST"] == ["/api/v1/namespaces/ml-train/pods"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == command and container["image"] == "registry.test/team/qlora:7.7.7"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    env = {e["name"] for e in container["env"]}
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "QLORA_HOME"} <= env  # the Pipes bootstrap arrived


def test_the_k8s_location_loads_with_the_k8s_executor(settings_file):
    from dagster_k8s import k8s_job_executor

    from pipelines.k8s_definitions import build_definitions

    defs = build_definitions(load_k8s_settings())
    dg.Definitions.validate_loadable(defs)  # what a code server checks: jobs, schedule and sensor targets resolve
    assert defs.resolve_job_def(JOB_NAME).executor_def is k8s_job_executor
    # The other jobs and the UI's Materialize runs take the location's executor, configured from the settings.
    for name in ("qlora_pipeline", "promote_alias", "__ASSET_JOB"):
        executor = defs.resolve_job_def(name).executor_def
        assert executor.name == "qlora_k8s" and executor.executor_creation_fn is k8s_job_executor.executor_creation_fn
    # adapter_evaluation runs on a CPU node in these settings, so the gpu resource may not insist on CUDA...
    assert not defs.resources["gpu"].require_gpu
    # ...while the shipped settings give every GPU step a GPU, and a step that lands without one fails at once.
    shipped = build_definitions(load_k8s_settings(DEFAULT_SETTINGS_FILE))
    assert shipped.resources["gpu"].require_gpu


def test_compose_location_loads_with_mlflow_on_the_server():
    from pipelines.server_definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert defs.resources["mlflow"].tracking_uri == dg.EnvVar("MLFLOW_TRACKING_URI")


def test_a_gpu_step_without_a_count_fails_the_location(settings_file):
    from pipelines.k8s_definitions import build_definitions

    settings = load_k8s_settings()
    bare = settings.model_copy(update={"gpu": settings.gpu.model_copy(update={"steps": {"qlora_adapter": 4}})})
    with pytest.raises(ValueError, match="^quantized_base_model, adapter_evaluation use the gpu resource but gpu.steps"):
        build_definitions(bare)


# A stand-in for the training command: rank 0's Pipes reports, written to stderr like any Pipes process in a pod.
PIPES_TRAINING = """
import os
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    pipes.log.info("rank 0: training")
    pipes.report_asset_materialization(metadata={
        "qlora_home": os.environ["QLORA_HOME"],
        "s3_secret_reached_the_pod": os.environ.get("AWS_SECRET_ACCESS_KEY") == "from-the-secret",
        "run_name": pipes.extras["run_name"]})
"""


@pytest.mark.slow  # the pod's process is a subprocess
def test_a_training_pod_reports_back_through_pipes(tmp_path):
    """The whole Pipes round trip: the pod spec run_training_pod builds is run by the stand-in's local kubelet (its
    command and env, envFrom resolved from the Secret), and what the process reports through Pipes on its log becomes
    the asset's materialization."""
    settings = K8sSettings(**SETTINGS)
    secrets = {"team-secrets": {"AWS_SECRET_ACCESS_KEY": "from-the-secret"}, "team-env": {}}
    with fake_k8s_api(tmp_path, kubelet=True, secrets=secrets, cwd=tmp_path) as (api, kubeconfig):
        client = PipesK8sClient(load_incluster_config=False, kubeconfig_file=str(kubeconfig), poll_interval=0.1)

        @dg.asset
        def adapter_in_a_pod(context):
            invocation = run_training_pod(context, [sys.executable, "-c", PIPES_TRAINING], settings, client=client,
                                          extras={"run_name": "nightly"})
            return invocation.get_materialize_result()

        result = dg.materialize([adapter_in_a_pod])
    metadata = result.asset_materializations_for_node("adapter_in_a_pod")[0].metadata
    assert metadata["qlora_home"].value == "/mnt/team/qlora"
    assert metadata["s3_secret_reached_the_pod"].value is True
    assert metadata["run_name"].value == "nightly"
    assert [m for m, p, _ in api.requests if p.endswith("/pods/" + next(iter(api.pods)))] == ["DELETE"]


@pytest.mark.slow  # the step's Job runs as a subprocess
def test_a_step_runs_in_its_job_and_leaves_its_artifact_on_the_data_volume(tmp_path, monkeypatch, tiny_base_dir):
    """Each step in its own pod, end to end: the executor creates training_dataset's Job, the stand-in runs the Job's
    container (`dagster api execute_step`, with the Job's env and the ConfigMap's) as a local process, the step
    writes to the instance the launcher names and its artifact into the data home the settings mount; the blocking
    checks then run in a Job of their own and read that artifact."""
    data = tmp_path / "volume"  # stands for the data claim, mounted at data_path in every pod
    settings = {**SETTINGS, "data_path": str(data)}
    (tmp_path / "k8s.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("QLORA_K8S_SETTINGS", str(tmp_path / "k8s.yaml"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.test:5000")
    home = tmp_path / "dagster-home"
    home.mkdir()
    env = {"team-secrets": {"AWS_SECRET_ACCESS_KEY": "from-the-secret"},
           "team-env": {"MLFLOW_TRACKING_URI": "http://mlflow.test:5000", "HF_HUB_OFFLINE": "1"}}
    with fake_k8s_api(tmp_path, kubelet=True, secrets=env, cwd=REPO_ROOT) as (api, kubeconfig):
        launcher = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "instance_config_map": "dagster-instance", "service_account_name": "dagster", "job_namespace": "ml-train",
            "load_incluster_config": False, "kubeconfig_file": str(kubeconfig), "dagster_home": str(home)}}
        with dg.instance_for_test(temp_dir=str(home), overrides={"run_launcher": launcher}) as instance:
            result = dg.execute_job(
                dg.reconstructable(k8s_job), instance, asset_selection=[dg.AssetKey("training_dataset")],
                run_config={"resources": {"base_model": {"config": {"model_id": str(tiny_base_dir)}}},
                            "ops": {"training_dataset": {"config": {"max_rows": 120, "max_seq_len": 64}}}})
            assert result.success
            events = instance.all_logs(result.run_id)
    # The asset and its blocking data checks, each in its own Job, both finished cleanly.
    assert sorted(j.body["metadata"]["labels"]["dagster/op"] for j in api.jobs.values()) == \
        ["training_dataset", "training_dataset_checks"]
    assert [j.proc.returncode for j in api.jobs.values()] == [0, 0]
    (artifact,) = (data / "qlora" / "artifacts" / "training_dataset").iterdir()  # QLORA_HOME from the pod's env
    materialized = [e for e in events if e.dagster_event and e.dagster_event.is_step_materialization]
    assert materialized[0].dagster_event.step_materialization_data.materialization.metadata["path"].value == str(artifact)
