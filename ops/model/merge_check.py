"""How far a merged export may drift from the 4-bit + adapter model before the merge counts as wrong.

The drift is the largest absolute logit difference on the comparison prompts (ops.model.export.compare), taken
relative to the largest absolute logit of the 4-bit + adapter model, and allowed up to a bound set by the
coarsest precision either side computes in: the export dtype, or the 4-bit kernel's. On CPUs with AVX512-BF16,
bitsandbytes' fused 4-bit kernel computes in bf16 whatever the compute dtype says, so there the bound is bf16's.
"""

from __future__ import annotations

from typing import Any

import torch

from .cpu_features import cpu_features
from .device import DeviceInfo

# max |logit diff| / max |reference logit| allowed, by the coarsest precision in the comparison. Measured on an
# AVX2-only CPU (embedded Llama, 4 layers x 256, LoRA trained 60 steps; tiny 2 x 64 the same or lower):
#   fp32 export, fp32 4-bit compute: 3.7e-7 (2e-6 on logits up to 5.4)
#   bf16 export or bf16 4-bit compute: at most 6.4e-3 (0.034 on logits up to 5.4)
#   a tied-embedding merge gone wrong (LoRA on embed_tokens merged into the shared head): 0.99-2.3
# The bounds sit ~10x above the correct merges (270x for fp32) and ~20x below the broken one.
MERGE_RTOL = {
    torch.float32: 1e-4,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-2,  # not measured (CUDA without bf16 only); fp16 rounds finer than bf16, so bf16's bound is safe
}


class MergeMismatch(RuntimeError):
    """The merged model does not compute what the 4-bit + adapter model computes."""


def fused_bf16_cpu_kernel() -> bool:
    """Whether bitsandbytes runs 4-bit layers in eval mode through its fused CPU kernel, which computes in bf16
    (bitsandbytes' own check, `has_avx512bf16`, read through the one capability check in ops/model/cpu_features.py)."""
    return cpu_features().bnb_packed_kernel


def reference_precision(device: DeviceInfo) -> tuple[torch.dtype, str]:
    """The precision the 4-bit + adapter model's matmuls really run in on `device`, and why."""
    if device.type == "cpu" and fused_bf16_cpu_kernel():
        return torch.bfloat16, "bitsandbytes' fused AVX512-BF16 4-bit kernel computes in bf16"
    return device.compute_dtype, f"4-bit layers compute in {device.dtype_name}"


def merge_tolerance(export_dtype: torch.dtype, device: DeviceInfo) -> tuple[float, str]:
    """The relative bound on the logit drift (see MERGE_RTOL) for this export dtype on this device, and why."""
    ref_dtype, ref_reason = reference_precision(device)
    coarsest = max((export_dtype, ref_dtype), key=lambda d: torch.finfo(d).eps)
    name = str(coarsest).removeprefix("torch.")
    why = f"export in {str(export_dtype).removeprefix('torch.')}; {ref_reason}"
    return MERGE_RTOL[coarsest], f"{name} bound ({why})"


def check_merge(summary: dict[str, Any], export_dtype: torch.dtype, device: DeviceInfo) -> dict[str, Any]:
    """The tolerance fields for the export report, or MergeMismatch when the measured drift is over the bound.

    Args: summary: ops.model.export.compare's numbers (max_abs_logit_diff, mean_abs_logit_diff, max_abs_reference_logit).
    Returns: {"max_abs_logit_diff_allowed": float (logits), "tolerance_reason": str}.
    Raises: MergeMismatch, one line with both numbers and the bound.
    """
    rtol, reason = merge_tolerance(export_dtype, device)
    # Logits below 1 in size (random tiny models) would make the bound vanish; 1 keeps it meaningful.
    allowed = rtol * max(1.0, summary["max_abs_reference_logit"])
    if not summary["max_abs_logit_diff"] <= allowed:  # `not <=` also catches NaN
        raise MergeMismatch(
            f"merged model differs from the 4-bit + adapter model by up to {summary['max_abs_logit_diff']:.3g} in "
            f"logits (mean {summary['mean_abs_logit_diff']:.3g}; "
            f"largest logit {summary['max_abs_reference_logit']:.3g}), "
            f"over the {allowed:.3g} allowed by the {reason}: the merge is wrong, nothing was written")
    return {"max_abs_logit_diff_allowed": allowed, "tolerance_reason": reason}
