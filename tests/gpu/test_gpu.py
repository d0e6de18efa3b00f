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
