"""The compute device and dtype a step would resolve, decided without importing torch where the machine allows.

A cached step needs its device only for its fingerprint (the 4-bit base depends on the compute dtype), and
`resolve_device` (device.py) imports torch and bitsandbytes for it: seconds of a run that does no work. This
module answers the same question from facts that need no import, and answers None whenever it cannot be sure,
so the caller falls back to `resolve_device`:

- no CUDA: the installed torch is a CPU build (version label `+cpu`), or macOS (torch has no CUDA there), or
  Linux with no NVIDIA device node (`/dev/nvidia<N>`, WSL's `/dev/dxg`) and no ROCm build (ROCm answers
  `torch.cuda` too). A CUDA machine is left to torch: which dtype its GPU supports needs the driver.
- the CPU's dtype, as `compute_dtype_choice("cpu")` picks it: bf16 when the CPU flags list AVX512-BF16 or AMX-BF16;
  fp32 when they do not list AVX512F (AVX512-BF16 and AMX come only with it). An AVX512 CPU that lists neither bf16
  flag is left to torch, because bitsandbytes' own cpuid probe, which `cpu_features` also reads, could still say yes.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # what cpu_features.CpuFeatures.native_bf16 reads from the OS
GPU_NODES = ("nvidia[0-9]*", "dxg")  # the CUDA driver's device nodes (dxg: WSL2), under /dev


def torch_build_label() -> Optional[str]:
    """The local label of the installed torch ('cpu' for 2.13.0+cpu, '' for a plain build); None when absent."""
    try:
        return version("torch").partition("+")[2]
    except PackageNotFoundError:
        return None


def cuda_impossible(label: Optional[str], platform: str = sys.platform, dev: Path = Path("/dev")) -> bool:
    """True when torch.cuda.is_available() cannot be True on this machine (see the module docstring)."""
    if label is None or label.startswith("rocm"):
        return False
    if label.startswith("cpu") or platform == "darwin":
        return True
    return platform.startswith("linux") and not any(any(dev.glob(node)) for node in GPU_NODES)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> Optional[frozenset[str]]:
    """The flags of the first CPU in /proc/cpuinfo; None where there is no such file (or no flags line)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


def cpu_dtype_name(flags: Optional[frozenset[str]]) -> Optional[str]:
    """'bfloat16' or 'float32' as `compute_dtype_choice("cpu")` would pick from these flags; None when unsure."""
    if flags is None:
        return None
    if any(f in flags for f in NATIVE_BF16_FLAGS):
        return "bfloat16"
    return "float32" if "avx512f" not in flags else None


def probe_device_kind(label: Optional[str] = None, platform: str = sys.platform, dev: Path = Path("/dev"),
                      cpuinfo: Path = Path("/proc/cpuinfo")) -> Optional[tuple[str, str]]:
    """("cpu", dtype name) when this machine surely computes on the CPU in that dtype; None when only torch can tell.

    Args:
        label: the torch build's version label (default: the installed one); platform, dev, cpuinfo: given in tests.
    Returns:
        ("cpu", "float32" | "bfloat16"), or None (a CUDA machine, an AVX512 CPU without bf16 flags, no torch).
    """
    if not cuda_impossible(torch_build_label() if label is None else label, platform, dev):
        return None
    dtype = cpu_dtype_name(cpu_flags(cpuinfo))
    return None if dtype is None else ("cpu", dtype)


def confirm_probe(probed: tuple[str, str], resolved: tuple[str, str]) -> None:
    """Raise when the probe disagreed with torch: the step's fingerprint would name another device's artifact.

    Raises:
        RuntimeError: naming both answers.
    """
    if tuple(probed) != tuple(resolved):
        raise RuntimeError(f"device probe said {'/'.join(probed)} but torch resolved {'/'.join(resolved)}; "
                           "ops/model/device_probe.py disagrees with ops/model/device.py (a bug: please report it)")
