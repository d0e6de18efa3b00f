"""What this CPU can do for bf16 and 4-bit kernels: the one capability check behind dtypes and kernel guards.

Three sources, because each answers a different question:
- torch's `get_cpu_capability()` names the vector ISA its kernels were dispatched to ("AVX2", "AVX512", ...);
  it never reports bf16 or AMX, so it only names the CPU kind in messages.
- the CPU flags (`avx512_bf16`, `amx_bf16` in /proc/cpuinfo on Linux, torch's cpuinfo probes elsewhere) say whether
  bf16 matmuls run in hardware;
- bitsandbytes' `has_avx512bf16()` is what bitsandbytes itself reads to repack 4-bit weights for its fused CPU kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .device_probe import cpu_flags

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # the /proc/cpuinfo flags that matter for bf16 on x86


@dataclass(frozen=True)
class CpuFeatures:
    torch_capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", "DEFAULT", ...
    avx512_bf16: bool  # AVX512-BF16 instructions (Cooper Lake, Sapphire Rapids and later Xeons, Zen 4+)
    amx_bf16: bool  # AMX tiles with bf16 (Sapphire Rapids and later Xeons)
    bnb_packed_kernel: bool  # bitsandbytes' has_avx512bf16(): it repacks 4-bit weights on the first eval forward
    flags: tuple[str, ...] = ()  # the BF16_FLAGS the OS lists for this CPU (empty where it lists none)

    @property
    def native_bf16(self) -> bool:
        """True when bf16 matmuls run in hardware (AVX512-BF16 or AMX), not emulated through fp32."""
        return self.avx512_bf16 or self.amx_bf16

    def describe(self) -> str:
        """One phrase for logs and summaries, e.g. 'AVX512 with AVX512-BF16, AMX-BF16' or 'AVX2, no native bf16'."""
        have = [name for name, on in (("AVX512-BF16", self.avx512_bf16), ("AMX-BF16", self.amx_bf16)) if on]
        return f"{self.torch_capability} with {', '.join(have)}" if have else f"{self.torch_capability}, no native bf16"


def os_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...] | None:
    """The bf16-related flags of the first CPU in /proc/cpuinfo (read by `device_probe.cpu_flags`, which serves the
    torch-free probe too); () for a file without a flags line; None where the file does not exist (macOS, Windows)."""
    present = cpu_flags(cpuinfo)
    if present is None:
        return () if cpuinfo.is_file() else None
    return tuple(f for f in BF16_FLAGS if f in present)


def _torch_probe(name: str) -> bool:
    """torch's cpuinfo probe `torch.cpu.<name>()`; False where this torch has no such (private) function."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def _bnb_packs_4bit_weights() -> bool:
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:  # no bitsandbytes: nothing repacks anything
        return False
    return bool(has_avx512bf16())


def detect_cpu_features() -> CpuFeatures:
    """Probe this CPU (uncached; `cpu_features()` is the cached entry point)."""
    flags = os_flags()
    if flags is None:  # no /proc/cpuinfo: ask torch's own cpuinfo probes
        avx512_bf16, amx = _torch_probe("_is_avx512_bf16_supported"), _torch_probe("_is_amx_tile_supported")
        flags = ()
    else:
        avx512_bf16, amx = "avx512_bf16" in flags, "amx_bf16" in flags
    packed = _bnb_packs_4bit_weights()
    return CpuFeatures(torch_capability=torch.backends.cpu.get_cpu_capability(),
                       avx512_bf16=avx512_bf16 or packed,  # bitsandbytes checks the same instructions through cpuid
                       amx_bf16=amx, bnb_packed_kernel=packed, flags=flags)


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's CPU features, probed once per process."""
    return detect_cpu_features()
