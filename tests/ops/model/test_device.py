"""The compute device on this machine, the dtype picked for it, and its peak memory."""

from __future__ import annotations

import pytest
import torch

from ops.model.cpu_features import CpuFeatures, cpu_features, detect_cpu_features, os_flags
from ops.model.device import (
    DeviceInfo,
    NoGPUError,
    compute_dtype_choice,
    peak_memory_bytes,
    pick_compute_dtype,
    reset_peak_memory,
    resolve_device,
)
from ops.model.export import export_dtype

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA GPU")
# What torch, the OS and bitsandbytes report on the two CPU kinds CI runs on.
AMX_XEON = CpuFeatures("AVX512", avx512_bf16=True, amx_bf16=True, bnb_packed_kernel=True,
                       flags=("avx512_bf16", "amx_bf16", "amx_tile"))
AVX2_ONLY = CpuFeatures("AVX2", avx512_bf16=False, amx_bf16=False, bnb_packed_kernel=False)


@no_cuda
def test_without_a_gpu_it_is_the_cpu_in_the_dtype_its_features_call_for():
    info = resolve_device()
    assert info.type == "cpu" and info.name
    expected = torch.bfloat16 if cpu_features().native_bf16 else torch.float32
    assert info.compute_dtype == expected and info.dtype_reason.startswith(info.dtype_name + ": this CPU (")


def test_auto_picks_bf16_only_on_cpus_that_compute_it_in_hardware():
    assert compute_dtype_choice("cpu", "auto", AMX_XEON) == (
        torch.bfloat16, "bfloat16: this CPU (AVX512 with AVX512-BF16, AMX-BF16) computes bf16 in hardware")
    assert compute_dtype_choice("cpu", "auto", AVX2_ONLY) == (
        torch.float32, "float32: this CPU (AVX2, no native bf16) would emulate bf16, far slower than fp32")
    cooper_lake = CpuFeatures("AVX512", avx512_bf16=True, amx_bf16=False, bnb_packed_kernel=True)
    assert compute_dtype_choice("cpu", "auto", cooper_lake)[0] == torch.bfloat16
    assert compute_dtype_choice("cpu", "float32", AMX_XEON) == (torch.float32, "float32: requested")


def test_export_dtype_reads_the_same_capability_check():
    cpu = DeviceInfo("cpu", "x", torch.float32)
    # torch reports "AVX512" on these Xeons, never "AVX512_BF16" or "AMX": the old check said "no native bf16" here
    assert export_dtype(cpu, features=AMX_XEON) == (
        torch.bfloat16, "bfloat16: this CPU (AVX512 with AVX512-BF16, AMX-BF16) computes bf16 in hardware")
    assert export_dtype(cpu, features=AVX2_ONLY) == (
        torch.float32, "float32: this CPU (AVX2, no native bf16) would emulate bf16, far slower than fp32")
    plain_avx512 = CpuFeatures("AVX512", avx512_bf16=False, amx_bf16=False, bnb_packed_kernel=False)
    assert export_dtype(cpu, features=plain_avx512)[0] == torch.float32
    assert export_dtype(cpu)[0] == compute_dtype_choice("cpu")[0]  # one check: export and compute agree here


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert os_flags(cpuinfo) == ("avx512_bf16", "amx_bf16", "amx_tile")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    assert os_flags(cpuinfo) == ()
    assert os_flags(tmp_path / "missing") is None


def test_this_machines_features_agree_with_what_bitsandbytes_and_torch_see():
    from bitsandbytes.functional import has_avx512bf16

    features = detect_cpu_features()
    assert features == cpu_features()
    assert features.torch_capability == torch.backends.cpu.get_cpu_capability()
    assert features.bnb_packed_kernel == bool(has_avx512bf16())
    if features.bnb_packed_kernel:  # bitsandbytes repacks only where the bf16 instructions exist
        assert features.avx512_bf16 and features.native_bf16
    if os_flags() is not None:
        assert features.amx_bf16 == ("amx_bf16" in os_flags())


@no_cuda
def test_require_gpu_fails_at_once_and_says_how_to_fix_it():
    with pytest.raises(NoGPUError, match=r"require_gpu is set but no CUDA GPU is visible.*require_gpu: false"):
        resolve_device(require_gpu=True)


def test_requested_dtype_wins_over_auto():
    assert pick_compute_dtype("cpu") == compute_dtype_choice("cpu")[0]
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
