"""The Kubernetes settings reach the specs dagster-k8s builds: step Jobs (K8sContainerContext merging as the
k8s_job_executor does, construct_dagster_k8s_job), op tags (get_user_defined_k8s_config) and the Pipes training pod
(build_pod_body, the path PipesK8sClient.run takes). Offline: no cluster, no API server."""

from __future__ import annotations

import re

import pytest
import yaml
from dagster._config import process_config
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config
from dagster_k8s.pipes import build_pod_body

from pipelines.k8s import executor_config, gpu_step_tags, training_pod
from pipelines.k8s_settings import DEFAULT_SETTINGS_FILE, K8sSettings, K8sSettingsError, load_k8s_settings

STEPS = ["training_dataset", "quantized_base_model", "qlora_adapter", "adapter_evaluation", "registered_adapter"]
# Values no default has, so a spec that shows them got them from the settings.
SETTINGS = {
    "image": "registry.test/team/qlora:7.7.7", "image_pull_policy": "Always", "namespace": "ml-train",
    "service_account": "trainer", "env_secrets": ["team-secrets"], "env_config_maps": ["team-env"],
    "data_claim": "team-data", "data_path": "/mnt/team", "cpu_resources": {"cpu": "3", "memory": "5Gi"},
    "gpu": {"resource": "nvidia.com/gpu", "steps": {"quantized_base_model": 1, "qlora_adapter": 4, "adapter_evaluation": 0},
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}],
            "resources": {"cpu": "24", "memory": "200Gi"}, "shm_size": "32Gi"},
}


@pytest.fixture
def settings() -> K8sSettings:
    return K8sSettings(**SETTINGS)


def step_job(config: dict, step: str):
    """The V1Job of `step`, merged the way K8sStepHandler._get_container_context and launch_step merge it
    (executor-level config, then the step's per_step_k8s_config), built by dagster-k8s."""
    context = K8sContainerContext(
        image_pull_policy=config.get("image_pull_policy"), service_account_name=config.get("service_account_name"),
        env_config_maps=config.get("env_config_maps"), env_secrets=config.get("env_secrets"),
        env_vars=config.get("env_vars"), volume_mounts=config.get("volume_mounts"), volumes=config.get("volumes"),
        labels=config.get("labels"), namespace=config.get("job_namespace"), resources=config.get("resources"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})))
    context = context.merge(K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["per_step_k8s_config"].get(step, {}))))
    return construct_dagster_k8s_job(DagsterK8sJobConfig(job_image=config["job_image"]),
                                     args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{step[:20]}",
                                     user_defined_k8s_config=context.run_k8s_config)


def env_from_names(container) -> tuple[set, set]:
    return ({e.secret_ref.name for e in container.env_from if e.secret_ref},
            {e.config_map_ref.name for e in container.env_from if e.config_map_ref})


def test_the_executor_config_passes_the_k8s_executors_schema(settings):
    result = process_config(k8s_job_executor.config_schema.config_type, executor_config(settings, STEPS))
    assert result.success, result.errors


def test_the_training_step_job_gets_its_gpus_nodes_and_secrets(settings):
    job = step_job(executor_config(settings, STEPS), "qlora_adapter")
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == "registry.test/team/qlora:7.7.7" and container.image_pull_policy == "Always"
    assert container.resources.requests == {"cpu": "24", "memory": "200Gi", "nvidia.com/gpu": "4"}
    assert container.resources.limits == {"memory": "200Gi", "nvidia.com/gpu": "4"}
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert [(t.key, t.operator, t.value, t.effect) for t in pod.tolerations] == [("dedicated", "Equal", "gpu", "NoExecute")]
    assert pod.service_account_name == "trainer"
    assert env_from_names(container) == ({"team-secrets"}, {"team-env"})
    env = {e.name: e.value for e in container.env}
    assert env["QLORA_HOME"] == "/mnt/team/qlora" and env["HF_HOME"] == "/mnt/team/hf-cache"
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["qlora-data"].persistent_volume_claim.claim_name == "team-data"
    assert volumes["dshm"].empty_dir.medium == "Memory" and volumes["dshm"].empty_dir.size_limit == "32Gi"
    assert {m.mount_path for m in container.volume_mounts} == {"/mnt/team", "/dev/shm"}
    assert job.spec.template.metadata.labels["app.kubernetes.io/part-of"] == "qlora-pipeline"


@pytest.mark.parametrize("step", ["training_dataset", "registered_adapter", "adapter_evaluation"])
def test_a_step_without_gpus_stays_off_the_gpu_nodes(settings, step):
    # adapter_evaluation has 0 GPUs in these settings: it runs on a CPU node.
    pod = step_job(executor_config(settings, STEPS), step).spec.template.spec
    (container,) = pod.containers
    assert container.resources.requests == {"cpu": "3", "memory": "5Gi"}
    assert "nvidia.com/gpu" not in container.resources.limits
    assert pod.node_selector is None and pod.tolerations is None
    assert env_from_names(container) == ({"team-secrets"}, {"team-env"})  # every pod reaches PostgreSQL and S3
    assert {v.name for v in pod.volumes} == {"qlora-data"}


def test_the_same_config_as_op_tags(settings):
    user = get_user_defined_k8s_config(gpu_step_tags(settings, 2))
    pod = construct_dagster_k8s_job(DagsterK8sJobConfig(job_image="img:1"), args=None, job_name="tagged",
                                    user_defined_k8s_config=user).spec.template.spec
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "2"
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}


def test_gpu_steps_must_name_real_steps(settings):
    with pytest.raises(ValueError, match="gpu.steps names qlora_adaptor, which no job runs"):
        executor_config(settings.model_copy(update={"gpu": settings.gpu.model_copy(update={"steps": {"qlora_adaptor": 2}})}),
                        STEPS)


TORCHRUN = ["torchrun", "--nproc_per_node=4", "-m", "ops.train", "--spec", "/data/qlora/spec.json"]


def pipes_pod(kwargs: dict):
    """The V1Pod PipesK8sClient.run would create with these keyword arguments (its env merge, then build_pod_body)."""
    return build_pod_body(pod_name="dagster-run-train", image=kwargs["image"], command=kwargs["command"],
                          env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", **kwargs["env"]},
                          base_pod_meta=kwargs["base_pod_meta"], base_pod_spec=kwargs["base_pod_spec"])


def test_the_pipes_training_pod(settings):
    kwargs = training_pod(TORCHRUN, settings)
    assert kwargs["namespace"] == "ml-train"
    pod = pipes_pod(kwargs)
    (container,) = pod.spec.containers
    assert container.command == TORCHRUN and container.image == "registry.test/team/qlora:7.7.7"
    assert container.resources.requests["nvidia.com/gpu"] == container.resources.limits["nvidia.com/gpu"] == "4"
    assert pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod.spec.tolerations[0].key == "dedicated" and pod.spec.restart_policy == "Never"
    assert pod.spec.service_account_name == "trainer"
    assert env_from_names(container) == ({"team-secrets"}, {"team-env"})
    env = {e.name: e.value for e in container.env}
    assert env["DAGSTER_PIPES_CONTEXT"] == "ctx" and env["QLORA_HOME"] == "/mnt/team/qlora"
    assert {v.name: v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim} == \
        {"qlora-data": "team-data"}
    assert pod.metadata.labels["app.kubernetes.io/component"] == "training"


def test_the_training_pod_takes_its_gpu_count_from_the_caller(settings):
    pod = pipes_pod(training_pod(["torchrun", "--nproc-per-node", "8", "train.py"], settings, gpus=8))
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "8"


@pytest.mark.parametrize("command, gpus, image, message", [
    (["torchrun", "--nproc_per_node=2", "-m", "ops.train"], 4, "img:1",
     "torchrun starts 2 processes (--nproc_per_node) but the pod gets 4 GPUs"),
    ([], None, "img:1", "the training command must be a non-empty list of non-empty strings, got []"),
    (["python", "-m", "ops.train"], 0, "img:1", "a training pod needs at least 1 GPU, got gpus=0"),
    (["python", "-m", "ops.train"], None, None, "no image for the training pod"),
])
def test_the_training_pod_refuses(settings, monkeypatch, command, gpus, image, message):
    monkeypatch.delenv("DAGSTER_CURRENT_IMAGE", raising=False)
    with pytest.raises(ValueError) as err:
        training_pod(command, settings.model_copy(update={"image": image}), gpus=gpus)
    assert str(err.value).startswith(message)


def write(tmp_path, text: str):
    path = tmp_path / "k8s.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("gpu: {steps: {qlora_adapter: -1}}", "gpu.steps: qlora_adapter must be >= 0 GPUs, got -1"),
    ("gpu: {node_selecter: {a: b}}", "gpu.node_selecter: Extra inputs are not permitted"),
    ("cpu_resources: {cpu: two, memory: 8Gi}", "cpu_resources.cpu: must be a Kubernetes quantity such as 2, 500m or 16Gi, got 'two'"),
    ("env_secrets: [Team_Secrets]", "env_secrets: 'Team_Secrets' is not a Kubernetes object name"),
    ("data_path: data", "data_path: must be an absolute path in the container, got 'data'"),
    ("gpu: {tolerations: [{key: dedicated, operator: Equal}]}", "gpu.tolerations.0: toleration 'dedicated': operator Equal needs a value"),
    ("training_pod: true", "k8s.yaml: training_pod runs the training in a pod with nproc_per_node GPUs, so the "
                           "qlora_adapter step's own pod needs none: set gpu.steps.qlora_adapter to 0, got 1"),
    ("image: [", "is not valid YAML"),
    ("- a list", "must hold a mapping of settings, got list"),
])
def test_bad_settings_name_the_key(tmp_path, text, message):
    with pytest.raises(K8sSettingsError, match=re.escape(message)):
        load_k8s_settings(write(tmp_path, text))


def test_settings_come_from_the_env_named_file_and_the_image_from_its_own_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_K8S_SETTINGS", str(write(tmp_path, "image: a:1\nnamespace: ns-from-file\n")))
    monkeypatch.setenv("QLORA_K8S_IMAGE", "b:2")
    s = load_k8s_settings()
    assert (s.namespace, s.image) == ("ns-from-file", "b:2")
    monkeypatch.setenv("QLORA_K8S_SETTINGS", str(tmp_path / "missing.yaml"))
    with pytest.raises(K8sSettingsError, match="missing.yaml does not exist"):
        load_k8s_settings()


def test_the_shipped_settings_load_and_give_every_gpu_step_a_gpu():
    from pipelines.k8s_definitions import gpu_using_steps

    s = load_k8s_settings(DEFAULT_SETTINGS_FILE)
    assert yaml.safe_load(DEFAULT_SETTINGS_FILE.read_text())  # a mapping, not an empty file
    assert all(s.gpu.count(step) >= 1 for step in gpu_using_steps())
    assert set(gpu_using_steps()) == {"quantized_base_model", "qlora_adapter", "adapter_evaluation"}


@pytest.mark.slow  # starts a subprocess
def test_the_local_location_never_imports_dagster_k8s():
    from tests.test_light_imports import HEAVY, heavy_modules_after_importing

    assert heavy_modules_after_importing("pipelines.definitions", heavy=("dagster_k8s", "kubernetes")) == []
    # compose's location loads no ML library either, like the local one
    assert heavy_modules_after_importing("pipelines.server_definitions", heavy=HEAVY) == []
