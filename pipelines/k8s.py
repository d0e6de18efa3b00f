"""K8sSettings -> what dagster-k8s needs: the k8s_job_executor's run config (each step in its own pod, GPU steps on
the GPU nodes) and the Pipes training pod (one pod, N GPUs, a command such as torchrun's).

Only dicts come out of here; dagster-k8s's own builders (construct_dagster_k8s_job, PipesK8sClient's build_pod_body)
turn them into V1Job and V1Pod objects, which tests/pipelines/test_k8s*.py check. No cluster is contacted.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence

from pipelines.k8s_settings import K8sSettings

if TYPE_CHECKING:  # dagster_k8s imports the kubernetes client: loaded by run_training_pod only
    import dagster as dg
    from dagster_k8s import PipesK8sClient

K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY, without importing it
DATA_VOLUME, SHM_VOLUME = "qlora-data", "dshm"
TRAINING_CONTAINER = "training"


def pod_env(settings: K8sSettings) -> dict[str, str]:
    """Plain environment of every pod: the data home on the shared volume, and the Hugging Face cache beside it
    (a base model downloads once, not once per pod)."""
    return {"QLORA_HOME": settings.qlora_home, "HF_HOME": f"{settings.data_path.rstrip('/')}/hf-cache"}


def _data_volume(settings: K8sSettings) -> tuple[dict, dict]:
    return ({"name": DATA_VOLUME, "persistent_volume_claim": {"claim_name": settings.data_claim}},
            {"name": DATA_VOLUME, "mount_path": settings.data_path})


def _resources(cpu: str, memory: str, gpus: int = 0, gpu_resource: str = "nvidia.com/gpu") -> dict:
    # Memory limit = request: a step that outgrows it is killed with a clear OOMKilled, not evicted at random.
    # Extended resources (GPUs) must have requests equal to limits.
    gpu = {gpu_resource: str(gpus)} if gpus else {}
    return {"requests": {"cpu": cpu, "memory": memory, **gpu}, "limits": {"memory": memory, **gpu}}


def gpu_step_k8s_config(settings: K8sSettings, gpus: int) -> dict:
    """The `dagster-k8s/config` of a step with `gpus` GPUs: GPU requests and limits, the GPU nodes' selector and
    taints, and an in-memory /dev/shm. Merged (deep) onto the config every step gets."""
    g = settings.gpu
    return {
        "container_config": {
            "resources": _resources(g.resources.cpu, g.resources.memory, gpus, g.resource),
            "volume_mounts": [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}],
        },
        "pod_spec_config": {
            "node_selector": dict(g.node_selector),
            "tolerations": [t.model_dump(exclude_none=True) for t in g.tolerations],
            "volumes": [{"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": g.shm_size}}],
        },
    }


def gpu_step_tags(settings: K8sSettings, gpus: int) -> dict[str, str]:
    """The same as op tags (`op_tags=` of an asset), for code that sets them on the asset rather than the executor."""
    return {K8S_CONFIG_TAG: json.dumps(gpu_step_k8s_config(settings, gpus))}


def executor_config(settings: K8sSettings, steps: Iterable[str]) -> dict:
    """Run config of dagster_k8s.k8s_job_executor (`execution: config:`): what every step pod gets, and per GPU step
    (those of `steps` with a GPU count in settings.gpu.steps) its `gpu_step_k8s_config`.

    Raises:
        ValueError: settings.gpu.steps names a step that is not in `steps` (a typo would leave it on a CPU node).
    """
    steps = list(steps)
    unknown = sorted(set(settings.gpu.steps) - set(steps))
    if unknown:
        raise ValueError(f"gpu.steps names {', '.join(unknown)}, which no job runs; the steps are {', '.join(steps)}")
    volume, mount = _data_volume(settings)
    config: dict[str, Any] = {
        "image_pull_policy": settings.image_pull_policy,
        "env_secrets": list(settings.env_secrets),
        "env_config_maps": list(settings.env_config_maps),
        "env_vars": [f"{k}={v}" for k, v in pod_env(settings).items()],
        "volumes": [volume],
        "volume_mounts": [mount],
        "labels": dict(settings.labels),
        "resources": _resources(settings.cpu_resources.cpu, settings.cpu_resources.memory),
        "per_step_k8s_config": {step: gpu_step_k8s_config(settings, settings.gpu.count(step))
                                for step in steps if settings.gpu.count(step) > 0},
    }
    optional = {"job_image": settings.resolved_image(), "service_account_name": settings.service_account,
                "job_namespace": settings.namespace}
    return {**config, **{k: v for k, v in optional.items() if v}}


def _nproc_per_node(command: Sequence[str]) -> Optional[int]:
    """torchrun's --nproc_per_node / --nproc-per-node in `command` when it is a number, else None."""
    for i, arg in enumerate(command):
        m = re.fullmatch(r"--nproc[_-]per[_-]node(?:=(.*))?", arg)
        if m:
            value = m.group(1) if m.group(1) is not None else (command[i + 1] if i + 1 < len(command) else "")
            return int(value) if value.isdigit() else None
    return None


def training_pod(command: Sequence[str], settings: K8sSettings, gpus: Optional[int] = None,
                 env: Optional[Mapping[str, str]] = None) -> dict:
    """Keyword arguments of `PipesK8sClient.run` for one training pod: `command` (e.g. the torchrun command of
    ops/train) in the settings' image with `gpus` GPUs (default: gpu.steps["qlora_adapter"]) on a GPU node, the
    Secrets and ConfigMaps as environment, the data volume and an in-memory /dev/shm.

    Args:
        command: the container's command, a list of strings (no shell).
        gpus: GPUs of the pod; must match torchrun's --nproc_per_node when the command names a number.
        env: extra plain environment variables.

    Returns:
        {"image", "command", "namespace", "env", "base_pod_meta", "base_pod_spec"}; namespace None means the client's
        default (the current namespace in a cluster).

    Raises:
        ValueError: an empty command, no image, gpus < 1, or --nproc_per_node different from gpus.
    """
    command = list(command)
    if not command or not all(isinstance(a, str) and a for a in command):
        raise ValueError(f"the training command must be a non-empty list of non-empty strings, got {command!r}")
    gpus = settings.gpu.count("qlora_adapter") if gpus is None else gpus
    if gpus < 1:
        raise ValueError(f"a training pod needs at least 1 GPU, got gpus={gpus}")
    nproc = _nproc_per_node(command)
    if nproc is not None and nproc != gpus:
        raise ValueError(f"torchrun starts {nproc} processes (--nproc_per_node) but the pod gets {gpus} GPUs")
    image = settings.resolved_image()
    if not image:
        raise ValueError("no image for the training pod: set `image` in the Kubernetes settings or $QLORA_K8S_IMAGE")
    step = gpu_step_k8s_config(settings, gpus)
    volume, mount = _data_volume(settings)
    container = {
        "name": TRAINING_CONTAINER,
        "image_pull_policy": settings.image_pull_policy,
        "env_from": [{"secret_ref": {"name": s}} for s in settings.env_secrets]
                    + [{"config_map_ref": {"name": c}} for c in settings.env_config_maps],
        "volume_mounts": [mount, *step["container_config"]["volume_mounts"]],
        "resources": step["container_config"]["resources"],
    }
    spec = {"containers": [container], "restart_policy": "Never", "volumes": [volume, *step["pod_spec_config"]["volumes"]],
            "node_selector": step["pod_spec_config"]["node_selector"],
            "tolerations": step["pod_spec_config"]["tolerations"]}
    if settings.service_account:
        spec["service_account_name"] = settings.service_account
    return {"image": image, "command": command, "namespace": settings.namespace,
            "env": {**pod_env(settings), **(env or {})},
            "base_pod_meta": {"labels": {**settings.labels, "app.kubernetes.io/component": "training"}},
            "base_pod_spec": spec}


def run_training_pod(context: dg.AssetExecutionContext, command: Sequence[str], settings: K8sSettings,
                     client: Optional[PipesK8sClient] = None, gpus: Optional[int] = None,
                     extras: Optional[Mapping[str, Any]] = None):
    """Run `command` in a training pod through Dagster Pipes and wait for it; its reports (progress, metadata)
    arrive in `context`. Returns the PipesClientCompletedInvocation (`.get_results()`, `.get_materialize_result()`).

    Raises:
        ValueError: see `training_pod`; the client's errors when the pod fails or cannot be created.
    """
    from dagster_k8s import PipesK8sClient

    kwargs = training_pod(command, settings, gpus)
    return (client or PipesK8sClient()).run(context=context, extras=extras, **kwargs)
