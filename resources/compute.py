"""The GPU resource: which device the training and evaluation steps run on."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from ops.model.device import DeviceInfo, peak_memory_bytes, resolve_device


class GPUResource(dg.ConfigurableResource):
    """CUDA when present, else the CPU with a clear log line; `require_gpu` fails at once without a GPU."""

    require_gpu: bool = Field(False, description="Fail at once when no CUDA GPU is visible instead of using the CPU.")

    def device(self, log=None) -> DeviceInfo:
        info = resolve_device(self.require_gpu)
        if log is not None:
            if info.type == "cuda":
                log.info(f"compute device: CUDA GPU {info.name}, compute dtype {info.dtype_reason or info.dtype_name}")
            else:  # the reason starts with the dtype: "float32: this CPU (AVX2, no native bf16) would emulate ..."
                log.warning(f"no CUDA GPU visible: running on the CPU ({info.name}), compute dtype "
                            f"{info.dtype_reason or info.dtype_name}")
        return info

    def peak_memory_bytes(self, info: DeviceInfo) -> int:
        return peak_memory_bytes(info.type)
