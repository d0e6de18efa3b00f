"""Export a registered adapter as one plain model: the 4-bit base dequantized, the LoRA merged in, no PEFT, no bnb.

The merge happens in full precision: merging into the 4-bit layers would re-quantize the merged weight and lose
the adapter's small updates. How far the merged model drifts from the 4-bit + adapter one is measured, not assumed,
and an export that drifts past the bound of ops.model.merge_check fails instead of being written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from transformers import AutoModelForCausalLM

from ..data.chat_template import stop_token_ids
from ..data.prompt_formats import render_user_prompt
from .cpu_features import CpuFeatures
from .cpu_kernels import named_kernel_errors
from .device import DeviceInfo, compute_dtype_choice
from .generation import encode_prompts, generate
from .loading import device_map, load_adapter_model, load_tokenizer
from .merge_check import check_merge

# Prompts in the bundled data's style; the comparison only needs a few realistic inputs.
COMPARISON_PROMPTS = (
    "How many colors are in the list?\nbridge quartz hammer desert",
    "Give the first word.\nquick brown fox",
    "How many animals are in the list?\ntiger river zebra",
    "Reverse the words.\nred green blue",
)


class ExportResult(BaseModel):
    """A merged export: where it is, in which dtype, and how far it drifts from the 4-bit + adapter model."""

    model_config = ConfigDict(frozen=True)

    out_dir: str
    dtype: str
    dtype_reason: str
    quantization_config_saved: bool  # False for a correct export: plain weights, no bitsandbytes
    untied_embeddings: bool  # tied embeddings that the adapter changed were untied before merging
    max_abs_logit_diff: float  # logits, merged vs reference, over every prompt position
    mean_abs_logit_diff: float
    max_abs_reference_logit: float
    generation_agreement: float  # share of greedy generations that are identical, 0 to 1
    prompts: int
    max_new_tokens: int
    max_abs_logit_diff_allowed: float  # the bound (ops/model/merge_check.py)
    tolerance_reason: str


def export_dtype(device: DeviceInfo, requested: str = "auto", features: CpuFeatures | None = None) -> tuple[torch.dtype, str]:
    """The dtype to save the merged model in, with the reason: the compute dtype's own choice
    (`compute_dtype_choice`: bf16 where the device runs it natively, fp32 on CPUs that would emulate it), except
    fp32 where that choice is fp16 (a GPU without bf16), whose range a merged model's weights can overflow.

    `features` defaults to this machine's CPU (`cpu_features()`).
    """
    dtype, reason = compute_dtype_choice(device.type, requested, features)
    if requested == "auto" and dtype == torch.float16:
        return torch.float32, "float32: this GPU has no bf16, and fp16 can overflow merged weights"
    return dtype, reason


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    """The plain layer under PEFT's wrappers (a LoRA layer's base_layer, a modules_to_save wrapper's original)."""
    while True:
        inner = getattr(module, "base_layer", None)
        inner = getattr(module, "original_module", None) if inner is None else inner
        if inner is None:
            return module
        module = inner


def untie_adapted_embeddings(peft_model) -> bool:
    """Give the output head its own copy of the embedding matrix when the two are tied and the adapter wraps either.

    With tied weights, merging a LoRA on `embed_tokens` writes its update into the one shared matrix, so the head
    changes too, though in the 4-bit + adapter model it never saw the update (logits off by up to 8.6, mean 0.57,
    on the issue's model; by as much as the largest logit on the embedded one). Untied, each merge lands only
    where the adapter applied it. Returns whether it untied anything.
    """
    model = peft_model.get_base_model()
    wrapped_in, wrapped_out = model.get_input_embeddings(), model.get_output_embeddings()
    if wrapped_out is None:
        return False
    plain_in, plain_out = _unwrapped(wrapped_in), _unwrapped(wrapped_out)
    adapted = plain_in is not wrapped_in or plain_out is not wrapped_out
    if plain_in.weight is not plain_out.weight or not adapted:
        return False
    plain_out.weight = torch.nn.Parameter(plain_out.weight.detach().clone(), requires_grad=False)
    for config in (model.config, model.config.get_text_config()):
        config.tie_word_embeddings = False  # saved untied, and reloaded untied
    return True


def merged_model(base_dir: str | Path, adapter_dir: str | Path, device: DeviceInfo, dtype: torch.dtype):
    """The 4-bit base dequantized to `dtype` with the adapter merged in, a plain transformers model; and whether
    tied input/output embeddings were untied first because the adapter changes either (untie_adapted_embeddings).
    """
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), device_map=device_map(device), dtype=dtype)
    # transformers swaps each bnb Linear4bit for an nn.Linear holding dequantize_4bit(weight) and drops
    # quantization_config from the config, so the saved model loads without bitsandbytes.
    base = base.dequantize(dtype=dtype).to(dtype)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    untied = untie_adapted_embeddings(peft_model)
    merged = peft_model.merge_and_unload()
    merged.config.use_cache = True  # training checkpoints save use_cache=False; an exported model generates
    return merged.eval(), untied


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
        "max_abs_reference_logit": float(max(logits.abs().max() for logits in reference["logits"])),
        "generation_agreement": sum(same) / len(same),
        "prompts": len(same),
    }


def measure(model, tokenizer, prompts: list[str], max_new_tokens: int) -> dict[str, Any]:
    """What `compare` needs from one model: its logits on the prompts and its greedy generations."""
    return {"logits": prompt_logits(model, tokenizer, prompts),
            "generations": generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=8)}


def export_merged(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, device: DeviceInfo, *,
                  prompt_format: str = "text", dtype: str = "auto", prompts: tuple[str, ...] = COMPARISON_PROMPTS,
                  max_new_tokens: int = 16, reference=None) -> ExportResult:
    """Write the merged model and tokenizer to `out_dir`; return the dtype used and the measured difference.

    The files are written beside `out_dir` first and moved in only when the reloaded model's logits are within
    the tolerance of ops.model.merge_check; otherwise nothing lands in `out_dir`.
    Raises: MergeMismatch (ops.model.merge_check) when the merged model drifts past the tolerance.
    """
    out_dir = Path(out_dir)
    torch_dtype, reason = export_dtype(device, dtype)
    tokenizer = load_tokenizer(base_dir, padding_side="left")
    rendered = [render_user_prompt(p, prompt_format, tokenizer) for p in prompts]
    # The reference is measured and freed before the merged copy is built, so only one model is in memory.
    reference = reference if reference is not None else load_adapter_model(base_dir, adapter_dir, device)
    with named_kernel_errors("export (4-bit reference)", reference):
        expected = measure(reference, tokenizer, rendered, max_new_tokens)
    del reference
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        merged, untied = merged_model(base_dir, adapter_dir, device, torch_dtype)
        # Plain transformers then stops where ops.model.generation does: at eos or the chat template's end-of-turn token.
        stops = stop_token_ids(tokenizer, merged.generation_config)
        merged.generation_config.eos_token_id = stops if len(stops) > 1 else merged.generation_config.eos_token_id
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del merged
        # Measure the saved files as a user would load them: plain transformers, no PEFT, no bitsandbytes.
        reloaded = AutoModelForCausalLM.from_pretrained(str(staging), device_map=device_map(device), dtype=torch_dtype)
        saved_config = json.loads((staging / "config.json").read_text())
        summary = {"out_dir": str(out_dir), "dtype": str(torch_dtype).removeprefix("torch."), "dtype_reason": reason,
                   "quantization_config_saved": "quantization_config" in saved_config,
                   "untied_embeddings": untied,
                   **compare(expected, measure(reloaded, tokenizer, rendered, max_new_tokens)),
                   "max_new_tokens": max_new_tokens}
        del reloaded
        result = ExportResult(**summary, **check_merge(summary, torch_dtype, device))
        (staging / "export_report.json").write_text(result.model_dump_json(indent=2))
        out_dir.mkdir(exist_ok=True)
        for path in staging.iterdir():
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def describe(result: ExportResult) -> str:
    """The one-paragraph note the CLI prints after an export."""
    return (f"merged model written to {result.out_dir} in {result.dtype} ({result.dtype_reason}).\n"
            f"merged vs 4-bit + adapter on {result.prompts} prompts: max |logit diff| "
            f"{result.max_abs_logit_diff:.3g} (allowed {result.max_abs_logit_diff_allowed:.3g}), mean "
            f"{result.mean_abs_logit_diff:.3g}; greedy generations "
            f"({result.max_new_tokens} tokens) agree on {result.generation_agreement:.0%}")
