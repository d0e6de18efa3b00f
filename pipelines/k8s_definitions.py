"""The Kubernetes code location: the same assets, jobs, schedule and sensor as pipelines.definitions, MLflow on the
shared server (pipelines/server_definitions.py), each step in its own pod (dagster-k8s's k8s_job_executor), the GPU
steps on the GPU nodes (with `training_pod: true`, qlora_adapter's torchrun in a training pod of its own,
pipelines/k8s_launcher.py). Settings: deploy/k8s.yaml (pipelines/k8s_settings.py). Selected by pointing a workspace
or Helm's user deployment at this module:

    dagster api grpc -m pipelines.k8s_definitions      (deploy/helm/values.yaml does this)

The local default (pipelines.definitions, workspace.yaml) is untouched and never imports dagster_k8s.
"""

from __future__ import annotations

import dagster as dg
from dagster_k8s import k8s_job_executor

from assets import PIPELINE_ASSETS
from assets.checks import ASSET_CHECKS
from pipelines.k8s import executor_config
from pipelines.k8s_launcher import K8sTrainingLauncher
from pipelines.k8s_settings import K8sSettings, load_k8s_settings
from pipelines.server_definitions import JOBS, server_definitions, server_resources
from resources import GPUResource

JOB_NAME = "qlora_pipeline_k8s"


def gpu_using_steps() -> list[str]:
    """The assets that ask for the `gpu` resource: each needs a GPU count in the settings."""
    return [a.op.name for a in PIPELINE_ASSETS if "gpu" in a.required_resource_keys]


def step_names() -> list[str]:
    return [a.op.name for a in PIPELINE_ASSETS] + [c.op.name for c in ASSET_CHECKS]


def build_definitions(settings: K8sSettings) -> dg.Definitions:
    """The code location for `settings`.

    Raises:
        ValueError: a step that uses the `gpu` resource has no count in settings.gpu.steps (it would land on a CPU
            node unnoticed), or gpu.steps names a step that does not exist.
    """
    missing = [s for s in gpu_using_steps() if s not in settings.gpu.steps]
    if missing:
        raise ValueError(f"{', '.join(missing)} use the gpu resource but gpu.steps gives no GPU count; "
                         f"add them (0 runs a step on a CPU node)")
    config = executor_config(settings, step_names())
    # Every job of this location, and the UI's "Materialize" runs, use the settings' pod config...
    executor = k8s_job_executor.configured(config, name="qlora_k8s")
    # ...and this job shows it in the launchpad, editable per run (a value given there replaces the settings').
    job = dg.define_asset_job(
        JOB_NAME, selection=dg.AssetSelection.assets(*PIPELINE_ASSETS), executor_def=k8s_job_executor,
        config={"execution": {"config": config}},
        description="The pipeline with each step in its own Kubernetes pod; training and evaluation on GPU nodes.")
    # A step that was given a GPU fails at once without one, instead of training on the CPU for days; with a
    # training pod, qlora_adapter's ranks (which get require_gpu through the job file) run where the GPUs are.
    gpu = GPUResource(require_gpu=all(settings.step_has_gpus(s) for s in gpu_using_steps()))
    resources = {**server_resources(), "gpu": gpu}
    if settings.training_pod:  # qlora_adapter's torchrun in a pod of its own, with nproc_per_node GPUs
        resources["training_launcher"] = K8sTrainingLauncher.from_settings(settings)
    return server_definitions(jobs=[*JOBS, job], resources=resources, executor=executor)


defs = build_definitions(load_k8s_settings())
