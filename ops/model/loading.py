"""Loading models and tokenizers the same way in every step (quantize, train, evaluate, serve)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .cpu_kernels import guard_packed_kernel
from .device import DeviceInfo, fix_cpu_mmap_threshold


def load_tokenizer(source: str | Path, revision: str | None = None, trust_remote_code: bool = False,
                   padding_side: str = "right") -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(str(source), revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # many causal LMs ship without one; padding is masked out anyway
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def device_map(device: DeviceInfo) -> dict[str, int | str]:
    """The whole model on one device: under torchrun each rank's own GPU (LOCAL_RANK), else GPU 0 or the CPU."""
    return {"": int(os.environ.get("LOCAL_RANK", 0)) if device.type == "cuda" else "cpu"}


def load_quantized_model(model_dir: str | Path, device: DeviceInfo,
                         log: Callable[[str], Any] | None = None) -> PreTrainedModel:
    """Load a saved 4-bit checkpoint (its quantization config travels in config.json), guarded for this CPU.

    Its unquantized weights (embeddings, head, norms) are cast to the compute dtype: from_pretrained keeps the
    dtype they were saved in (fp32 when quantized on an AVX2 CPU), whatever `dtype` asks.

    Layers bitsandbytes' packed CPU kernel cannot take stay off it (`ops.model.cpu_kernels.guard_packed_kernel`),
    which says so once through `log` on CPUs with AVX512-BF16 and is silent elsewhere.
    On a CPU it first stops glibc keeping freed tensors in the heap (`fix_cpu_mmap_threshold`).
    """
    if device.type == "cpu":
        fix_cpu_mmap_threshold()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), device_map=device_map(device), dtype=device.compute_dtype)
    model.config.use_cache = False
    for param in model.parameters():  # a 4-bit checkpoint keeps the dtype it was quantized in for these
        if param.is_floating_point() and param.dtype != device.compute_dtype and type(param).__name__ != "Params4bit":
            param.data = param.data.to(device.compute_dtype)
    guard_packed_kernel(model, log)
    return model


def prepare_for_training(model: PreTrainedModel, gradient_checkpointing: bool = True,
                         upcast_to_fp32: bool = False) -> PreTrainedModel:
    """Freeze the base and turn on gradient checkpointing, keeping unquantized weights in the dtype they loaded in.

    What peft's `prepare_model_for_kbit_training` does, less its cast of every 16-bit parameter to fp32: with bf16
    compute that cast doubles the embeddings and output head (on Llama 3.1 8B, 2.1 GB more; on a 134M Llama with a
    49k vocabulary, 57 MB), for stability it does not buy here: only the LoRA weights train, and peft keeps those
    in fp32 (`autocast_adapter_dtype`), and Llama's RMSNorm computes in fp32 whatever its weight's dtype. With fp32
    compute (AVX2 CPUs) nothing is 16-bit, so both do the same. It also turns checkpointing on for a 16-bit base,
    which peft does for quantized models only.

    Args:
        model: a loaded base (4-bit or not).
        gradient_checkpointing: recompute activations in backward (non-reentrant, so frozen inputs need no hook).
        upcast_to_fp32: cast 16-bit unquantized parameters to fp32 as peft does (for comparisons).
    Returns:
        the same model, frozen.
    """
    for param in model.parameters():
        param.requires_grad_(False)
        if upcast_to_fp32 and param.dtype in (torch.float16, torch.bfloat16) and type(param).__name__ != "Params4bit":
            param.data = param.data.float()
    if gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})  # reentrant breaks with frozen inputs
    return model


def load_adapter_model(model_dir: str | Path, adapter_dir: str | Path, device: DeviceInfo,
                       log: Callable[[str], Any] | None = None):
    """The 4-bit base with a trained LoRA adapter on top, ready for inference."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_quantized_model(model_dir, device, log), str(adapter_dir))
    model.eval()
    return model
