"""Loading models and tokenizers the same way in every step (quantize, train, evaluate, serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .cpu_kernels import guard_packed_kernel
from .device import DeviceInfo


def load_tokenizer(source: str | Path, revision: str | None = None, trust_remote_code: bool = False,
                   padding_side: str = "right") -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(str(source), revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # many causal LMs ship without one; padding is masked out anyway
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def device_map(device: DeviceInfo) -> dict[str, int | str]:
    return {"": 0 if device.type == "cuda" else "cpu"}


def load_quantized_model(model_dir: str | Path, device: DeviceInfo,
                         log: Callable[[str], Any] | None = None) -> PreTrainedModel:
    """Load a saved 4-bit checkpoint (its quantization config travels in config.json), guarded for this CPU.

    Layers bitsandbytes' packed CPU kernel cannot take stay off it (`ops.model.cpu_kernels.guard_packed_kernel`),
    which says so once through `log` on CPUs with AVX512-BF16 and is silent elsewhere.
    """
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), device_map=device_map(device), dtype=device.compute_dtype)
    model.config.use_cache = False
    guard_packed_kernel(model, log)
    return model


def load_adapter_model(model_dir: str | Path, adapter_dir: str | Path, device: DeviceInfo,
                       log: Callable[[str], Any] | None = None):
    """The 4-bit base with a trained LoRA adapter on top, ready for inference."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_quantized_model(model_dir, device, log), str(adapter_dir))
    model.eval()
    return model
