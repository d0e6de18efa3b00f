"""The training launcher resource: how the qlora_adapter step starts its torchrun launch command through Dagster
Pipes. This default runs it as a subprocess of the step; the Kubernetes location swaps in a training pod
(pipelines/k8s_launcher.py)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError  # not re-exported by `dagster`

from ops.core.paths import REPO_ROOT


class TrainingLaunchFailed(RuntimeError):
    """The launch command ran and failed (a non-zero exit, a failed pod); the launcher's failure file says why."""


class TrainingLauncher(dg.ConfigurableResource):
    """Runs the launch command as a subprocess of the step, in this checkout; rank 0's Pipes reports reach the run."""

    def launch(self, context: dg.AssetExecutionContext, command: Sequence[str], gpus: int,
               extras: Mapping[str, Any]) -> None:
        """Run `command` through Pipes and wait for it.

        Args:
            command: the launch command of this machine (ops/train/launch.py `launch_command`), no shell.
            gpus: GPUs its processes use (torchrun's nproc_per_node); a subprocess sees this machine's, unused here.
            extras: Pipes extras for rank 0 (MLflow run, progress terminal).

        Raises:
            TrainingLaunchFailed: the command exited non-zero.
        """
        # cwd: `-m ops.train...` in the launcher and its ranks resolves to this checkout, whatever is installed;
        # forward_termination: a cancelled run stops torchrun and its ranks
        client = dg.PipesSubprocessClient(cwd=str(REPO_ROOT), forward_termination=True)
        try:
            client.run(context=context, command=list(command), extras=dict(extras))
        except DagsterPipesExecutionError as err:
            raise TrainingLaunchFailed(str(err)) from None
