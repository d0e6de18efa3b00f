"""The CUDA path: bf16 compute picked automatically, and paged AdamW really paging. Skipped without a GPU."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def gpu():
    from ops.model.device import resolve_device

    return resolve_device(require_gpu=True)


@pytest.fixture(scope="module")
def gpu_quantized(tiny_base_dir, gpu, tmp_path_factory):
    from ops.model.base_resolution import resolve_base
    from ops.model.quantize import quantize_base
    from ops.model.spec import QuantSpec

    out = tmp_path_factory.mktemp("gpu-quantized")
    return out, quantize_base(resolve_base(str(tiny_base_dir)), QuantSpec(compute_dtype="auto"), gpu, out, log=lambda _: None)


def test_auto_compute_dtype_is_bf16_on_a_gpu_that_has_it(gpu, gpu_quantized):
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    summary = gpu_quantized[1]
    assert gpu.type == "cuda" and gpu.dtype_name == expected
    assert summary.compute_dtype == expected and summary.device == "cuda"
    assert summary.double_quant is True and 4.12 <= summary.bits_per_quantized_weight <= 4.14
    assert summary.reload_check is True and summary.mean_abs_quant_error > 0


def test_paged_adamw_pages_its_state_on_cuda(gpu, gpu_quantized, tiny_dataset, tmp_path):
    from ops.train.spec import TrainSpec
    from ops.train.trainer import train_adapter
    from tests.tiny import TINY_RECIPE

    spec = TrainSpec(max_steps=3, batch_size=8, logging_steps=1, save_steps=100, warmup_steps=1, optim="paged_adamw_32bit",
                     **TINY_RECIPE)
    summary = train_adapter(gpu_quantized[0] / "model", tiny_dataset[0], tmp_path, spec, gpu, log=lambda _: None)
    assert summary.steps == 3 and summary.device == "cuda"
    assert summary.optimizer.startswith("paged_adamw_32bit: bitsandbytes.")
    assert "with paged optimizer state" in summary.optimizer and "fell back" not in summary.optimizer
    assert summary.peak_memory_bytes > 0  # torch.cuda.max_memory_allocated
    assert len(summary.loss_history) == 3 and all(math.isfinite(loss) for _, loss in summary.loss_history)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_the_steps_torchrun_path_trains_on_the_ranks_gpu(gpu, gpu_quantized, tiny_dataset, tmp_path):
    """What qlora_adapter runs, on CUDA: the launcher (torchrun, one rank), the rank on GPU LOCAL_RANK with the
    device's own compute dtype, paged AdamW; its summary and adapter where the step reads them."""
    import subprocess

    from ops.core.paths import REPO_ROOT
    from ops.train.launch import TrainJob, launch_command
    from ops.train.launch_spec import LaunchSpec
    from ops.train.spec import TrainResult
    from tests.tiny import TINY_RECIPE

    spec = dict(max_steps=3, batch_size=8, logging_steps=1, save_steps=100, warmup_steps=1, optim="paged_adamw_32bit",
                **TINY_RECIPE)
    out = tmp_path / "out"
    job = TrainJob(model_dir=str(gpu_quantized[0] / "model"), dataset_dir=str(tiny_dataset[0]), out_dir=str(out),
                   checkpoint_dir=str(tmp_path / "ckpt"), spec=spec, require_gpu=True,
                   launch=LaunchSpec(nproc_per_node=1), rdzv_id="gpu-test")
    failure = tmp_path / "failure.json"
    proc = subprocess.run(launch_command(job.write(tmp_path / "ckpt" / "launch.json"), 0, failure), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (failure.read_text() if failure.is_file() else "") + proc.stderr[-3000:]
    result = TrainResult.model_validate_json((out / "train_summary.json").read_text())
    assert result.device == "cuda" and result.steps == 3 and result.world_size == 1
    assert result.compute_dtype == gpu.dtype_name
    assert "with paged optimizer state" in result.optimizer, result.optimizer
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
