"""One torchrun rank's training: the device it owns, its callbacks, and `train_adapter` with its share of the batches.

Called by ops/train/pipes_entry.py (which alone talks to Dagster); no Dagster import here.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Optional

from transformers import TrainerCallback

from ..model.device import DeviceInfo, compute_dtype_choice, resolve_device
from .distributed import RankInfo
from .launch import TrainJob
from .spec import TrainResult, TrainSpec

# Test-only fault: "<rank>:<step>" makes that rank SIGKILL itself at the end of that step (tests/test_distributed*.py)
KILL_ENV = "QLORA_TEST_KILL_RANK_AT_STEP"


class KillAtStep(TrainerCallback):
    """SIGKILL this process at the end of optimizer step `step`, before that step's checkpoint is saved."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def fault_callbacks(ranks: RankInfo, environ: Optional[dict[str, str]] = None) -> list[TrainerCallback]:
    """The test-only fault KILL_ENV asks of this rank, if any."""
    wanted = (os.environ if environ is None else environ).get(KILL_ENV)
    if not wanted:
        return []
    rank, step = (int(v) for v in wanted.split(":"))
    return [KillAtStep(step)] if rank == ranks.rank else []


def rank_device(job: TrainJob, ranks: RankInfo) -> DeviceInfo:
    """The device this rank trains on: its own GPU (LOCAL_RANK) on CUDA, else the CPU."""
    device = resolve_device(job.require_gpu)
    if job.compute_dtype != "auto":
        device = DeviceInfo(device.type, device.name, *compute_dtype_choice(device.type, job.compute_dtype))
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(ranks.local_rank)
    return device


def describe_device(device: DeviceInfo, ranks: RankInfo) -> str:
    """The compute-device line of the run log (as resources/compute.py words it for the other steps)."""
    where = f"{ranks.world_size} processes" if ranks.world_size > 1 else "1 process"
    if device.type == "cuda":
        return f"compute device: CUDA GPU {device.name}, compute dtype {device.dtype_reason or device.dtype_name}; {where}"
    return (f"no CUDA GPU visible: running on the CPU ({device.name}), compute dtype "
            f"{device.dtype_reason or device.dtype_name}; {where}")


def train_rank(job: TrainJob, ranks: RankInfo, log: Callable[[str], Any], warn: Callable[[str], Any],
               mlflow_run: Optional[tuple[str, str]] = None) -> TrainResult:
    """Train this rank's part of `job`.

    Args:
        job: the launch file's contents.
        ranks: this process's rank, local rank and world size.
        log, warn: progress lines and warnings; rank 0's reach the run log, the others' are dropped.
        mlflow_run: (tracking URI, run id) that rank 0 logs the loss to; None: no MLflow.
    Returns:
        the training summary (rank 0 also wrote it, the adapter and the loss curve to `job.out_dir`).
    """
    from .callbacks import MlflowLossCallback
    from .trainer import train_adapter

    device = rank_device(job, ranks)
    quiet = lambda _: None  # noqa: E731
    log, warn = (log, warn) if ranks.is_main else (quiet, quiet)
    (log if device.type == "cuda" else warn)(describe_device(device, ranks))
    callbacks: list[TrainerCallback] = fault_callbacks(ranks)
    if mlflow_run is not None and ranks.is_main:
        callbacks.append(MlflowLossCallback(*mlflow_run, warn))
    return train_adapter(job.model_dir, job.dataset_dir, job.out_dir, TrainSpec(**job.spec), device,
                         checkpoint_dir=job.checkpoint_dir, callbacks=callbacks, log=log, ranks=ranks)
