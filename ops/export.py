"""Export a registered adapter as one plain model: the 4-bit base dequantized, the LoRA merged in, no PEFT, no bnb.

The merge happens in full precision: merging into the 4-bit layers would re-quantize the merged weight and lose
the adapter's small updates. How far the merged model drifts from the 4-bit + adapter one is measured, not assumed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from .cpu_features import CpuFeatures, cpu_features
from .device import DeviceInfo
from .generation import encode_prompts, generate
from .modeling import device_map, load_adapter_model, load_tokenizer
from .prompting import render_user_prompt

# Prompts in the bundled data's style; the comparison only needs a few realistic inputs.
COMPARISON_PROMPTS = (
    "How many colors are in the list?\nbridge quartz hammer desert",
    "Give the first word.\nquick brown fox",
    "How many animals are in the list?\ntiger river zebra",
    "Reverse the words.\nred green blue",
)


def export_dtype(device: DeviceInfo, requested: str = "auto", features: CpuFeatures | None = None) -> tuple[torch.dtype, str]:
    """The dtype to save the merged model in, with the reason: bf16 unless this device cannot run it well.

    `features` defaults to this machine's CPU (`cpu_features()`, the check that also picks the compute dtype
    and guards the 4-bit kernels).
    """
    if requested != "auto":
        return getattr(torch, requested), "requested"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16: supported by this GPU"
        return torch.float32, "fp32: this GPU has no bf16"
    features = features or cpu_features()
    if features.native_bf16:
        return torch.bfloat16, f"bf16: this CPU ({features.describe()}) computes in bf16 natively"
    # Without native bf16 the CPU emulates it ~20x slower (ARCHITECTURE.md); fp32 keeps the check usable.
    return torch.float32, f"fp32: this CPU ({features.torch_capability}) has no native bf16 (no AVX512-BF16 or AMX)"


def merged_model(base_dir: str | Path, adapter_dir: str | Path, device: DeviceInfo, dtype: torch.dtype):
    """The 4-bit base dequantized to `dtype` with the adapter merged in: a plain transformers model."""
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), device_map=device_map(device), dtype=dtype)
    # transformers swaps each bnb Linear4bit for an nn.Linear holding dequantize_4bit(weight) and drops
    # quantization_config from the config, so the saved model loads without bitsandbytes.
    base = base.dequantize(dtype=dtype).to(dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True  # training checkpoints save use_cache=False; an exported model generates
    return merged.eval()


@torch.inference_mode()
def prompt_logits(model, tokenizer, prompts: list[str]) -> list[torch.Tensor]:
    """Next-token logits at every prompt position, one fp32 tensor per prompt (no padding to compare)."""
    device = next(model.parameters()).device
    return [model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu()
            for ids in encode_prompts(tokenizer, prompts)]


def compare(reference: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Max/mean absolute logit difference and greedy-generation agreement between two measured models."""
    diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(reference["logits"], candidate["logits"])])
    same = [a == b for a, b in zip(reference["generations"], candidate["generations"])]
    return {
        "max_abs_logit_diff": float(diffs.max()),
        "mean_abs_logit_diff": float(diffs.mean()),
        "generation_agreement": sum(same) / len(same),
        "prompts": len(same),
    }


def measure(model, tokenizer, prompts: list[str], max_new_tokens: int) -> dict[str, Any]:
    """What `compare` needs from one model: its logits on the prompts and its greedy generations."""
    return {"logits": prompt_logits(model, tokenizer, prompts),
            "generations": generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=8)}


def export_merged(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, device: DeviceInfo, *,
                  prompt_format: str = "text", dtype: str = "auto", prompts: tuple[str, ...] = COMPARISON_PROMPTS,
                  max_new_tokens: int = 16, reference=None) -> dict[str, Any]:
    """Write the merged model and tokenizer to `out_dir`; return the dtype used and the measured difference."""
    out_dir = Path(out_dir)
    torch_dtype, reason = export_dtype(device, dtype)
    tokenizer = load_tokenizer(base_dir, padding_side="left")
    rendered = [render_user_prompt(p, prompt_format, tokenizer) for p in prompts]
    # The reference is measured and freed before the merged copy is built, so only one model is in memory.
    reference = reference if reference is not None else load_adapter_model(base_dir, adapter_dir, device)
    expected = measure(reference, tokenizer, rendered, max_new_tokens)
    del reference
    merged = merged_model(base_dir, adapter_dir, device, torch_dtype)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del merged
    # Measure the saved files as a user would load them: plain transformers, no PEFT, no bitsandbytes.
    reloaded = AutoModelForCausalLM.from_pretrained(str(out_dir), device_map=device_map(device), dtype=torch_dtype)
    summary = {"out_dir": str(out_dir), "dtype": str(torch_dtype).removeprefix("torch."), "dtype_reason": reason,
               "quantization_config_saved": "quantization_config" in json.loads((out_dir / "config.json").read_text()),
               **compare(expected, measure(reloaded, tokenizer, rendered, max_new_tokens)),
               "max_new_tokens": max_new_tokens}
    (out_dir / "export_report.json").write_text(json.dumps(summary, indent=2))
    return summary


def describe(summary: dict[str, Any]) -> str:
    """The one-paragraph note the CLI prints after an export."""
    return (f"merged model written to {summary['out_dir']} in {summary['dtype']} ({summary['dtype_reason']}).\n"
            f"merged vs 4-bit + adapter on {summary['prompts']} prompts: max |logit diff| "
            f"{summary['max_abs_logit_diff']:.3g}, mean {summary['mean_abs_logit_diff']:.3g}; greedy generations "
            f"({summary['max_new_tokens']} tokens) agree on {summary['generation_agreement']:.0%}")
