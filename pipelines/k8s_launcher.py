"""The Kubernetes training launcher: qlora_adapter's launch command (torchrun under ops/train/launch.py) runs in a
training pod of its own with nproc_per_node GPUs (pipelines/k8s.py `run_training_pod`, dagster-k8s's PipesK8sClient),
so the step's pod needs none. The Kubernetes location uses it when its settings say `training_pod: true`.

The job file, checkpoints and failure file are on the data home, which both pods mount (the data volume).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import dagster as dg
from pydantic import Field

from pipelines.k8s import run_training_pod
from pipelines.k8s_settings import K8sSettings
from resources.training_launcher import TrainingLauncher, TrainingLaunchFailed


class K8sTrainingLauncher(TrainingLauncher):
    """Runs the launch command in a training pod (image, data volume, GPU nodes from the settings) through Pipes."""

    # JSON, not a nested model: Dagster resource fields must be config types, and the settings are a pydantic model
    settings_json: str = Field(description="The Kubernetes settings (pipelines/k8s_settings.py) as JSON: the pod's "
                                           "image, Secrets, data volume and GPU nodes.")
    kubeconfig_file: Optional[str] = Field(
        None, description="kubeconfig that reaches the API server; default: the pod's service account (in a cluster).")
    # A training run lasts minutes to days: a poll every few seconds costs the API server nothing
    poll_interval: float = Field(5.0, description="Seconds between checks of the training pod's state.")

    @classmethod
    def from_settings(cls, settings: K8sSettings, **kwargs) -> "K8sTrainingLauncher":
        return cls(settings_json=settings.model_dump_json(), **kwargs)

    def settings(self) -> K8sSettings:
        return K8sSettings.model_validate_json(self.settings_json)

    def launch(self, context: dg.AssetExecutionContext, command: Sequence[str], gpus: int,
               extras: Mapping[str, Any]) -> None:
        """Run `command` in a training pod with `gpus` GPUs and wait for it; rank 0's Pipes reports come back through
        the pod's log.

        Raises:
            TrainingLaunchFailed: the pod ran and failed (a non-zero exit, killed, timed out).
            ValueError: see pipelines/k8s.py `training_pod` (no image, gpus < 1); the kubernetes client's ApiException
                when the pod cannot be created (e.g. the service account may not create pods).
        """
        from dagster_k8s import PipesK8sClient
        from dagster_k8s.client import DagsterK8sError

        client = PipesK8sClient(kubeconfig_file=self.kubeconfig_file, poll_interval=self.poll_interval)
        context.log.info(f"training in a pod with {gpus} GPU(s): {' '.join(command)}")
        try:
            run_training_pod(context, command, self.settings(), client=client, gpus=gpus, extras=dict(extras))
        except DagsterK8sError as err:
            raise TrainingLaunchFailed(str(err)) from None
