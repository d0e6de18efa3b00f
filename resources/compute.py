"""The GPU resource: which device the training and evaluation steps run on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ops.model.device_probe import confirm_probe, probe_device_kind

if TYPE_CHECKING:  # ops.model.device imports torch: only a step that computes loads it (in the methods)
    from ops.model.device import DeviceInfo


class GPUResource(dg.ConfigurableResource):
    """CUDA when present, else the CPU with a clear log line; `require_gpu` fails at once without a GPU."""

    require_gpu: bool = Field(False, description="Fail at once when no CUDA GPU is visible instead of using the CPU.")

    def device(self, log=None, expect: tuple[str, str] | None = None) -> DeviceInfo:
        """The resolved device (imports torch), logged to `log`; checked against `expect`, the `kind()` a
        fingerprint was made with, when given (RuntimeError when they differ)."""
        from ops.model.device import resolve_device

        info = resolve_device(self.require_gpu)
        if expect is not None:
            confirm_probe(expect, (info.type, info.dtype_name))
        if log is not None:
            if info.type == "cuda":
                log.info(f"compute device: CUDA GPU {info.name}, compute dtype {info.dtype_reason or info.dtype_name}")
            else:  # the reason starts with the dtype: "float32: this CPU (AVX2, no native bf16) would emulate ..."
                log.warning(f"no CUDA GPU visible: running on the CPU ({info.name}), compute dtype "
                            f"{info.dtype_reason or info.dtype_name}")
        return info

    def kind(self) -> tuple[str, str]:
        """(device type, compute dtype name) as `device()` resolves them, without importing torch where this
        machine allows (ops/model/device_probe.py): what a fingerprint needs before the cache is checked.

        Raises:
            NoGPUError: `require_gpu` without a GPU (then torch is asked, as by `device()`).
        """
        probed = None if self.require_gpu else probe_device_kind()
        if probed is not None:
            return probed
        info = self.device()
        return info.type, info.dtype_name

    def peak_memory_bytes(self, info: DeviceInfo) -> int:
        from ops.model.device import peak_memory_bytes

        return peak_memory_bytes(info.type)
