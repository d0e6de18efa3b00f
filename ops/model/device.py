"""The compute device, the dtype to compute in on it, and its peak memory."""

from __future__ import annotations

import ctypes
import platform
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .cpu_features import CpuFeatures, cpu_features


class NoGPUError(RuntimeError):
    pass


class GPUMemoryError(RuntimeError):
    """The estimated peak of a run is more than the GPU has free: raised before the model is loaded."""


@dataclass(frozen=True)
class DeviceInfo:
    type: str  # "cuda" or "cpu"
    name: str
    compute_dtype: torch.dtype
    dtype_reason: str = ""  # why this dtype: the requested one, or what `auto` read from the device

    @property
    def dtype_name(self) -> str:
        return str(self.compute_dtype).removeprefix("torch.")


def resolve_device(require_gpu: bool = False) -> DeviceInfo:
    """CUDA when present, else the CPU; `require_gpu` fails at once when there is no GPU."""
    if torch.cuda.is_available():
        return DeviceInfo("cuda", torch.cuda.get_device_name(0), *compute_dtype_choice("cuda"))
    if require_gpu:
        raise NoGPUError(
            "require_gpu is set but no CUDA GPU is visible (torch.cuda.is_available() is False). "
            "Run on a GPU machine, or set require_gpu: false to train on the CPU."
        )
    return DeviceInfo("cpu", platform.processor() or platform.machine(), *compute_dtype_choice("cpu"))


def compute_dtype_choice(device_type: str, requested: str = "auto",
                         features: CpuFeatures | None = None) -> tuple[torch.dtype, str]:
    """The dtype to compute in on `device_type`, and why.

    Args:
        device_type: "cuda" or "cpu".
        requested: a torch dtype name ("bfloat16", "float16", "float32"), or "auto" to choose from the device.
        features: the CPU's features (default: this machine's, `cpu_features()`); given in tests.

    Returns:
        (dtype, reason). `auto` picks bf16 on a GPU that supports it (else fp16); on a CPU, bf16 where it has
        AVX512-BF16 or AMX and fp32 elsewhere, because 4-bit QLoRA steps with bf16 compute ran about 20x slower
        than fp32 on an AVX2-only CPU and slightly faster on an AMX Xeon (benchmarks/cpu_compute_dtype.py).
    """
    if requested != "auto":
        return getattr(torch, requested), f"{requested}: requested"
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bfloat16: supported by this GPU"
        return torch.float16, "float16: this GPU has no bf16"
    features = features or cpu_features()
    if features.native_bf16:
        return torch.bfloat16, f"bfloat16: this CPU ({features.describe()}) computes bf16 in hardware"
    return torch.float32, f"float32: this CPU ({features.describe()}) would emulate bf16, far slower than fp32"


def pick_compute_dtype(device_type: str, requested: str = "auto") -> torch.dtype:
    """The dtype alone of `compute_dtype_choice`."""
    return compute_dtype_choice(device_type, requested)[0]


def reset_peak_memory(device_type: str) -> None:
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(device_type: str) -> int:
    """Peak GPU memory allocated by torch on CUDA; on the CPU, this process's peak resident set size.

    On Linux the CPU figure is /proc/self/status VmHWM, the high-water mark of this process's own memory since it
    started: `getrusage` ru_maxrss also keeps the peak of the process it was forked from (Linux folds the old
    memory's peak in at exec), so a training subprocess started by a 1 GB parent reported at least 1 GB.
    """
    if device_type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB, macOS bytes


M_MMAP_THRESHOLD = -3  # glibc malloc.h's mallopt parameter number
# glibc's own starting value (128 KiB). Setting it, to any value, turns off glibc's dynamic threshold, which rises
# to the size of each mmapped block freed (those up to 32 MiB): after the first freed activation of a few MB, every
# tensor under that size came from the heap, and the heap kept what a step freed (benchmarks/memory.py).
CPU_MMAP_THRESHOLD_BYTES = 128 * 1024


def fix_cpu_mmap_threshold(threshold: int = CPU_MMAP_THRESHOLD_BYTES) -> bool:
    """Make glibc return every block of `threshold` bytes or more to the OS when freed (mallopt M_MMAP_THRESHOLD).

    On the CPU torch allocates tensors with malloc; with glibc's dynamic threshold a training step's freed
    activations stayed in the heap, counted in RSS: a forward pass of a 134M QLoRA Llama at batch 1 x 256 held
    1,099 MB RSS where its tensors needed 868 MB. Process-wide, and it changes no computed value.

    Returns:
        True when set (Linux with glibc), False elsewhere (nothing changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False


# How far ops.model.memory_estimate ran above the measured peak on a GPU: 1.40x and 1.38x (NVIDIA H200, QLoRA r=16 on
# Llama 3.2 1B and Llama 3.1 8B shapes, batch 4 x 2048, gradient checkpointing; benchmarks/gpu.py, 2026-11-29): its
# logits term is generous. A run is refused only when it would not fit even with the estimate that far off.
GPU_ESTIMATE_MARGIN = 1.4


def fit_error(estimated_bytes: int, free_bytes: int, total_bytes: int, device_name: str,
              what: str = "training") -> str | None:
    """The one-line error when `estimated_bytes` exceed `free_bytes` of a GPU by more than the estimate's measured
    overshoot (`GPU_ESTIMATE_MARGIN`), else None (all figures in bytes)."""
    if estimated_bytes <= free_bytes * GPU_ESTIMATE_MARGIN:
        return None
    return (f"{what} needs about {estimated_bytes / 2**30:.1f} GiB (estimated) but the GPU {device_name} has "
            f"{free_bytes / 2**30:.1f} GiB free of {total_bytes / 2**30:.1f} GiB; lower batch_size or max_seq_len, "
            f"or turn gradient_checkpointing on")


def ensure_fits(estimated_bytes: int, device: DeviceInfo, what: str = "training") -> int | None:
    """Fail before loading when a run's estimated peak (ops.model.memory_estimate) exceeds the GPU's free memory.

    Args:
        estimated_bytes: the predicted peak in bytes.
        device: the resolved device; on a CPU nothing is checked (the caller logs the estimate).
        what: the run, for the message.
    Returns:
        the GPU's free bytes (torch.cuda.mem_get_info), or None on a CPU.
    Raises:
        GPUMemoryError: one line with the estimate, the free and total memory, and what to lower (`fit_error`).
    """
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info()
    error = fit_error(estimated_bytes, free, total, device.name, what)
    if error:
        raise GPUMemoryError(error)
    return int(free)
