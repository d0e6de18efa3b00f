"""The compute device on this machine, the dtype picked for it, and its peak memory."""

from __future__ import annotations

import pytest
import torch

from ops.device import DeviceInfo, NoGPUError, peak_memory_bytes, pick_compute_dtype, reset_peak_memory, resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA GPU")


@no_cuda
def test_without_a_gpu_it_is_the_cpu_in_fp32():
    info = resolve_device()
    assert info.type == "cpu" and info.name
    assert info.compute_dtype == torch.float32 and info.dtype_name == "float32"  # bf16 is ~20x slower on these CPUs


@no_cuda
def test_require_gpu_fails_at_once_and_says_how_to_fix_it():
    with pytest.raises(NoGPUError, match=r"require_gpu is set but no CUDA GPU is visible.*require_gpu: false"):
        resolve_device(require_gpu=True)


def test_requested_dtype_wins_over_auto():
    assert pick_compute_dtype("cpu") == torch.float32
    assert pick_compute_dtype("cpu", "bfloat16") == torch.bfloat16
    assert pick_compute_dtype("cuda", "float16") == torch.float16
    assert DeviceInfo("cuda", "H100", torch.bfloat16).dtype_name == "bfloat16"


def test_cpu_peak_memory_is_the_process_peak_rss():
    reset_peak_memory("cpu")  # a no-op on the CPU
    before = peak_memory_bytes("cpu")
    assert before > 50 * 2**20  # torch alone takes more than 50 MiB
    block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, touched
    assert peak_memory_bytes("cpu") >= before
    assert peak_memory_bytes("cpu") >= block.numel()
