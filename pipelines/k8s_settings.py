"""Where and how the pipeline's pods run on Kubernetes: image, secrets, the shared data volume and the GPU nodes.

Read from a YAML file (deploy/k8s.yaml, or the file $QLORA_K8S_SETTINGS names); $QLORA_K8S_IMAGE overrides the
image (CI sets the tag it just pushed). pipelines/k8s.py turns these settings into the executor's run config and
the Pipes training pod; nothing here talks to a cluster.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ops.core.paths import REPO_ROOT

DEFAULT_SETTINGS_FILE = REPO_ROOT / "deploy" / "k8s.yaml"
SETTINGS_ENV, IMAGE_ENV = "QLORA_K8S_SETTINGS", "QLORA_K8S_IMAGE"
# Kubernetes quantities: "4", "500m", "32Gi", "1.5" (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
# A DNS-1123 label: the names of Secrets, ConfigMaps, claims and service accounts.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _quantity(v) -> str:
    if not QUANTITY.match(str(v)):
        raise ValueError(f"must be a Kubernetes quantity such as 2, 500m or 16Gi, got {v!r}")
    return str(v)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key (node_selecter) fails instead of being ignored


class Toleration(_Strict):
    """A pod toleration (the Kubernetes field names, snake_case)."""

    key: str = Field(description="Taint key, e.g. nvidia.com/gpu.")
    operator: Literal["Exists", "Equal"] = Field("Exists", description="Exists matches any value; Equal needs value.")
    value: Optional[str] = Field(None, description="Taint value, with operator Equal.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        None, description="Taint effect to tolerate; empty tolerates every effect.")

    @model_validator(mode="after")
    def _value_matches_operator(self) -> "Toleration":
        if self.operator == "Equal" and self.value is None:
            raise ValueError(f"toleration {self.key!r}: operator Equal needs a value")
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(f"toleration {self.key!r}: operator Exists takes no value, got {self.value!r}")
        return self


class Resources(_Strict):
    """CPU and memory a pod requests (and is limited to, for memory): Kubernetes quantities."""

    cpu: str = Field(description="CPU request, e.g. 2 or 500m.")
    memory: str = Field(description="Memory request and limit, e.g. 16Gi.")

    _quantities = field_validator("cpu", "memory", mode="before")(lambda v: _quantity(v))


class GpuSettings(_Strict):
    """The GPU node pool: which steps get GPUs, how many, and how their pods find and tolerate the GPU nodes."""

    resource: str = Field("nvidia.com/gpu", description="Extended resource the device plugin advertises.")
    # The steps that use the `gpu` resource. Quantization runs on the GPU too: the device is part of its fingerprint.
    steps: dict[str, int] = Field(
        {"quantized_base_model": 1, "qlora_adapter": 1, "adapter_evaluation": 1},
        description="GPUs per step (asset name -> count); 0 runs that step on a CPU node.")
    # Set on GPU nodes by NVIDIA's GPU feature discovery (part of the GPU operator).
    node_selector: dict[str, str] = Field({"nvidia.com/gpu.present": "true"},
                                          description="Node labels a GPU pod must match.")
    # GKE taints its GPU node pools nvidia.com/gpu=present:NoSchedule; many clusters copy that convention.
    tolerations: list[Toleration] = Field(
        [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="Taints of the GPU nodes that GPU pods tolerate.")
    resources: Resources = Field(Resources(cpu="8", memory="64Gi"),
                                 description="CPU and memory beside the GPUs (data loading, the 4-bit reload).")
    # NCCL and DataLoader workers share tensors through /dev/shm; a container's default 64 MiB fails multi-GPU runs.
    shm_size: str = Field("16Gi", description="Size of the in-memory /dev/shm volume of GPU pods.")

    @field_validator("steps")
    @classmethod
    def _counts(cls, v: dict[str, int]) -> dict[str, int]:
        for step, count in v.items():
            if count < 0:
                raise ValueError(f"{step} must be >= 0 GPUs, got {count}")
        return v

    _shm = field_validator("shm_size", mode="before")(lambda v: _quantity(v))

    def count(self, step: str) -> int:
        return self.steps.get(step, 0)


class K8sSettings(_Strict):
    """Everything the pods need that the cluster, not the run, decides."""

    image: Optional[str] = Field(
        None, description="Image of every step and training pod; default: the code location's own image "
                          "($DAGSTER_CURRENT_IMAGE, which Dagster's Helm chart sets on the user code deployment).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy; a unique tag per build makes IfNotPresent safe and fast.")
    namespace: Optional[str] = Field(None, description="Namespace of step and training pods; default: the run's.")
    service_account: Optional[str] = Field(None, description="Service account of the pods; default: the run launcher's.")
    env_secrets: list[str] = Field(
        ["qlora-secrets"], description="Secrets whose keys become environment variables (envFrom): DAGSTER_PG_PASSWORD, "
                                       "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.")
    env_config_maps: list[str] = Field(
        ["qlora-env"], description="ConfigMaps whose keys become environment variables: DAGSTER_PG_HOST, "
                                   "DAGSTER_PG_PORT, DAGSTER_PG_USER, DAGSTER_PG_DB, MLFLOW_TRACKING_URI, "
                                   "MLFLOW_S3_ENDPOINT_URL.")
    # Steps hand each other artifacts by path (<store>/<asset>/<fingerprint>/): every pod mounts the same volume,
    # which must be ReadWriteMany (NFS, EFS, Filestore, CephFS) when pods land on different nodes.
    data_claim: str = Field("qlora-data", description="PersistentVolumeClaim that holds the data home.")
    data_path: str = Field("/data", description="Where the data volume is mounted; QLORA_HOME is <data_path>/qlora.")
    cpu_resources: Resources = Field(Resources(cpu="2", memory="8Gi"), description="CPU and memory of non-GPU steps.")
    labels: dict[str, str] = Field({"app.kubernetes.io/part-of": "qlora-pipeline"},
                                   description="Labels on every pod (dashboards, cost reports, cleanup).")
    gpu: GpuSettings = Field(GpuSettings(), description="The GPU node pool.")
    training_pod: bool = Field(
        False, description="Run qlora_adapter's torchrun in a training pod of its own (Pipes, nproc_per_node GPUs) "
                           "instead of inside the step's pod; the step's pod then needs no GPU "
                           "(gpu.steps.qlora_adapter: 0). Its service account must create pods.")

    @model_validator(mode="after")
    def _training_pod_step_has_no_gpu(self) -> "K8sSettings":
        if self.training_pod and self.gpu.count("qlora_adapter") > 0:
            raise ValueError(f"training_pod runs the training in a pod with nproc_per_node GPUs, so the qlora_adapter "
                             f"step's own pod needs none: set gpu.steps.qlora_adapter to 0, "
                             f"got {self.gpu.count('qlora_adapter')}")
        return self

    def step_has_gpus(self, step: str) -> bool:
        """Whether `step`'s computation gets a GPU: its pod's count in gpu.steps, or, for qlora_adapter with
        `training_pod`, its training pod's."""
        return self.gpu.count(step) > 0 or (self.training_pod and step == "qlora_adapter")

    @field_validator("env_secrets", "env_config_maps", "data_claim", "service_account")
    @classmethod
    def _names(cls, v):
        for name in [v] if isinstance(v, str) else v or []:
            if not NAME.match(name):
                raise ValueError(f"{name!r} is not a Kubernetes object name (lower case letters, digits and '-')")
        return v

    @field_validator("data_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path in the container, got {v!r}")
        return v.rstrip("/") or "/"

    @property
    def qlora_home(self) -> str:
        return f"{self.data_path.rstrip('/')}/qlora"

    def resolved_image(self) -> Optional[str]:
        """The image pods run: `image`, else $DAGSTER_CURRENT_IMAGE; None leaves it to the executor (the code
        location's image)."""
        return self.image or os.environ.get("DAGSTER_CURRENT_IMAGE") or None


class K8sSettingsError(ValueError):
    """A settings file that cannot be read or does not validate; the message is one line per problem."""


def load_k8s_settings(path: str | Path | None = None) -> K8sSettings:
    """The settings from `path`, else $QLORA_K8S_SETTINGS, else deploy/k8s.yaml; $QLORA_K8S_IMAGE overrides the image.

    Raises:
        K8sSettingsError: the file is missing, not YAML, or a value is invalid (each problem named by its key).
    """
    path = Path(path or os.environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS_FILE)
    if not path.is_file():
        raise K8sSettingsError(f"Kubernetes settings file {path} does not exist (set ${SETTINGS_ENV})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise K8sSettingsError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise K8sSettingsError(f"{path} must hold a mapping of settings, got {type(raw).__name__}")
    if os.environ.get(IMAGE_ENV):
        raw["image"] = os.environ[IMAGE_ENV]
    try:
        return K8sSettings(**raw)
    except ValidationError as err:
        # a whole-settings check (training_pod with gpu.steps) has no key of its own: its message names both
        problems = [": ".join(filter(None, (".".join(str(p) for p in e["loc"]),
                                            e["msg"].removeprefix("Value error, "))))
                    for e in err.errors()]
        raise K8sSettingsError(f"{path}: " + "; ".join(problems)) from None
