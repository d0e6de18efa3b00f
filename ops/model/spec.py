"""Settings and result of quantized_base_model (pydantic, a help text per field); assets/base_model.py's config inherits them."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from ..core.store import StepSummary


class QuantSpec(BaseModel):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is QLoRA's NormalFloat.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (~0.37 bits/weight saved).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Dtype of the matmuls. auto: bf16 on a CUDA GPU that supports it (else fp16); on a CPU, bf16 "
        "where it has AVX512-BF16 or AMX, fp32 elsewhere (emulated bf16 trained ~10-20x slower on AVX2).",
    )


class QuantizedBase(StepSummary):
    """What `quantize_base` made: the 4-bit checkpoint's numbers and the choices behind it."""

    base_model_id: str
    base_identity: dict[str, Optional[str]]  # model id and revision or content hash: the lineage of the base
    quant_type: str  # nf4 or fp4
    double_quant: bool  # read back from the saved layers, not the request
    compute_dtype: str
    compute_dtype_reason: str
    cpu: Optional[str]  # the CPU's capabilities, on a CPU
    layers_off_packed_cpu_kernel: int
    device: str
    device_name: str
    quantized_layers: int
    quantized_params: int
    unquantized_params: int
    total_params: int
    bits_per_quantized_weight: float  # bits, quantization constants included
    mean_abs_quant_error: Optional[float]  # None when the source weights were not at hand
    layers_measured_for_error: int
    size_on_disk_bytes: int
    bf16_size_bytes: int  # what the same weights take in bf16
    reload_check: bool
    seconds: float
