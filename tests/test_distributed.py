"""Training under torchrun on the CPU (gloo): one rank reproduces the golden losses, and two ranks train the same
adapter as one rank with twice the per-process batch on the same data order (tests/test_distributed_pipeline.py
runs the step through Dagster: two machines, a killed rank)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ops.core.paths import REPO_ROOT
from ops.train.launch import TrainJob, launch_command
from ops.train.launch_spec import LaunchSpec
from tests.ops.train.test_golden_loss import GOLDEN
from tests.tiny import TINY_RECIPE, quantize_fp32

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp32_base(tiny_base_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fp32-base")
    quantize_fp32(tiny_base_dir, out)
    return out


def launch(tmp: Path, base: Path, dataset: Path, spec: dict, nproc: int = 1) -> tuple[Path, float]:
    """Run `python -m ops.train.launch` (torchrun, `nproc` ranks, fp32 compute) on a job; (out dir, wall seconds)."""
    out = tmp / "out"
    job = TrainJob(model_dir=str(base), dataset_dir=str(dataset), out_dir=str(out), checkpoint_dir=str(tmp / "ckpt"),
                   spec=spec, compute_dtype="float32", launch=LaunchSpec(nproc_per_node=nproc), rdzv_id="test")
    job_file = job.write(tmp / "ckpt" / "launch.json")
    started = time.time()
    proc = subprocess.run(launch_command(job_file), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, time.time() - started


def test_one_rank_under_torchrun_reproduces_the_golden_losses(fp32_base, tiny_dataset, tmp_path):
    spec = dict(max_steps=5, batch_size=8, logging_steps=1, warmup_steps=1, save_steps=5, seed=0, **TINY_RECIPE)
    out, wall = launch(tmp_path, fp32_base, tiny_dataset[0], spec)
    from ops.train.spec import TrainResult

    result = TrainResult.model_validate_json((out / "train_summary.json").read_text())
    assert [step for step, _ in result.loss_history] == [step for step, _ in GOLDEN]
    torch.testing.assert_close([loss for _, loss in result.loss_history], [loss for _, loss in GOLDEN],
                               rtol=1e-4, atol=0.0)
    assert result.world_size == 1
    print(f"1 rank, 5 steps through torchrun: {wall:.1f}s wall, {result.wall_seconds:.1f}s inside train_adapter")


def test_two_ranks_train_the_adapter_one_rank_trains_with_twice_the_batch(fp32_base, tiny_dataset, tmp_path):
    # dropout 0: nothing random but the data order, which accelerate deals out to the ranks batch by batch
    common = dict(max_steps=4, logging_steps=1, save_steps=100, seed=0, **{**TINY_RECIPE, "dropout": 0.0})
    one, one_wall = launch(tmp_path / "one", fp32_base, tiny_dataset[0], {**common, "batch_size": 8}, nproc=1)
    two, two_wall = launch(tmp_path / "two", fp32_base, tiny_dataset[0], {**common, "batch_size": 4}, nproc=2)
    a, b = load_file(one / "adapter" / "adapter_model.safetensors"), load_file(two / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = max((a[k].abs().max().item() for k in a if "lora_B" in k))  # lora_B starts at 0: training moved it
    print(f"max |adapter(1 rank x 8) - adapter(2 ranks x 4)| = {diff:.2e} (lora_B up to {moved:.2e}); "
          f"wall 1 rank {one_wall:.1f}s, 2 ranks {two_wall:.1f}s")
    assert moved > 1e-3
    assert diff <= 1e-5
    from ops.train.spec import TrainResult

    summary = TrainResult.model_validate_json((two / "train_summary.json").read_text())
    assert (summary.world_size, summary.steps) == (2, 4)
