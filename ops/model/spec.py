"""Settings of quantized_base_model (pydantic, a help text per field); assets/base_model.py's config inherits them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class QuantSpec(BaseModel):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is QLoRA's NormalFloat.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (~0.37 bits/weight saved).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Dtype of the matmuls. auto: bf16 on a CUDA GPU that supports it (else fp16); on a CPU, bf16 "
        "where it has AVX512-BF16 or AMX, fp32 elsewhere (emulated bf16 trained ~10-20x slower on AVX2).",
    )
