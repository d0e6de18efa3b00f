"""The compute device, the dtype to compute in on it, and its peak memory."""

from __future__ import annotations

import platform
import resource
import sys
from dataclasses import dataclass

import torch


class NoGPUError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeviceInfo:
    type: str  # "cuda" or "cpu"
    name: str
    compute_dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.compute_dtype).removeprefix("torch.")


def resolve_device(require_gpu: bool = False) -> DeviceInfo:
    """CUDA when present, else the CPU; `require_gpu` fails at once when there is no GPU."""
    if torch.cuda.is_available():
        return DeviceInfo("cuda", torch.cuda.get_device_name(0), pick_compute_dtype("cuda"))
    if require_gpu:
        raise NoGPUError(
            "require_gpu is set but no CUDA GPU is visible (torch.cuda.is_available() is False). "
            "Run on a GPU machine, or set require_gpu: false to train on the CPU."
        )
    return DeviceInfo("cpu", platform.processor() or platform.machine(), pick_compute_dtype("cpu"))


def pick_compute_dtype(device_type: str, requested: str = "auto") -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device_type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # CPUs without AVX512-BF16 run bf16 4-bit matmuls ~20x slower than fp32 (measured; see ARCHITECTURE.md).
    return torch.float32


def reset_peak_memory(device_type: str) -> None:
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(device_type: str) -> int:
    """Peak GPU memory allocated by torch on CUDA; on the CPU, the process's peak resident set size."""
    if device_type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB, macOS bytes
