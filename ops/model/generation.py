"""Greedy batched generation: prompts in, completions out (used by evaluation, the served model, the CLI, export).

Generation stops at eos or at the chat template's end-of-turn token, whichever comes first, and the answer is
cut there, so every caller gets the same text for the same tokens (ops.data.chat_template). Prompts are run
longest first, so each batch holds prompts of similar length (little padding), and come back in input order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..core.progress import progress
from ..data.chat_template import answer_text, stop_token_ids
from ..data.tokens import with_bos

MEMORY_SHARE = 0.25  # of the free memory a batch may plan to use: the estimate leaves out allocator slack and copies
MAX_AUTO_BATCH = 256  # beyond this a CPU gains nothing per token, and one batch's latency grows without bound


def _model_device(model) -> torch.device:
    """Where the inputs go: the device of the first parameter (works for PEFT wrappers and 4-bit models)."""
    return next(model.parameters()).device


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt exactly as training saw them: bos (when the tokenizer has one), then the text."""
    return [with_bos(tokenizer, ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free now: CUDA's free device memory, else the host's available RAM (psutil, which accelerate needs)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def row_bytes(config, seq_len: int, dtype_bytes: int = 4) -> int:
    """Peak bytes one sequence of `seq_len` tokens adds to an inference forward pass or a greedy generation.

    Counts the KV cache (2 x layers x kv heads x head dim), fp32 logits three times over (the logits, their
    fp32 copy and the loss's log-softmax), one layer's attention scores and MLP activations. Weights are not
    counted: they are already loaded. Figures from the model config; `dtype_bytes` is the activations' size.
    """
    text = getattr(config, "text_config", None) or config  # multimodal configs keep the LM's sizes apart
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    kv_cache = 2 * text.num_hidden_layers * kv_heads * head_dim * seq_len * dtype_bytes
    logits = 3 * seq_len * text.vocab_size * 4
    layer = (heads * seq_len * seq_len + seq_len * (3 * text.intermediate_size + 4 * text.hidden_size)) * dtype_bytes
    return kv_cache + logits + layer


def batch_size_from_memory(model, seq_len: int, rows: int, free_bytes: int | None = None) -> int:
    """How many sequences of `seq_len` tokens to run at once: as many as fit in MEMORY_SHARE of free memory.

    Args:
        model: the model (its config gives the sizes; its first parameter the device).
        seq_len: the longest sequence, prompt plus new tokens.
        rows: sequences to run in all (the batch is never larger).
        free_bytes: free memory to plan with; default: measured now on the model's device.
    Returns:
        between 1 and min(rows, MAX_AUTO_BATCH).
    """
    device = _model_device(model)
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    dtype = getattr(model, "dtype", torch.float32)
    dtype_bytes = dtype.itemsize if dtype.is_floating_point else 4
    fit = int(MEMORY_SHARE * free // max(1, row_bytes(model.config, seq_len, dtype_bytes)))
    return max(1, min(rows, MAX_AUTO_BATCH, fit))


def _longest_first(lengths: list[int], size: int) -> Iterator[list[int]]:
    """Indices in batches of `size`, longest first, so each batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), size):
        yield order[start:start + size]


@torch.inference_mode()
def generate_ids_batch(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int,
                       stop_ids: list[int]) -> list[list[int]]:
    """Greedily continue one batch of encoded prompts; return each row's new token ids (padding after a stop kept)."""
    # Left padding keeps every prompt's last token at the end, where decoder-only models continue from.
    enc = tokenizer.pad({"input_ids": prompt_ids}, padding=True, padding_side="left",
                        return_tensors="pt").to(_model_device(model))
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,  # greedy: deterministic, so base and tuned numbers are comparable run to run
        num_beams=1,
        use_cache=True,  # training loads set use_cache=False; generation wants the KV cache
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids or None,  # every id stops a row; the rest of the batch goes on
    )
    return out[:, enc["input_ids"].shape[1]:].tolist()


def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int,
                   stop_ids: list[int] | None = None) -> list[str]:
    """Complete one batch of prompts greedily; return each answer: the new text up to the first stop token, stripped.

    `stop_ids` defaults to ops.data.chat_template.stop_token_ids (eos, end-of-turn, the model's configured eos ids).
    """
    if stop_ids is None:
        stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    new = generate_ids_batch(model, tokenizer, encode_prompts(tokenizer, prompts), max_new_tokens, stop_ids)
    return [answer_text(ids, tokenizer, stop_ids) for ids in new]


def generate_ids(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int | None = None,
                 stop_ids: list[int] | None = None, desc: str = "generate") -> list[list[int]]:
    """New token ids for each encoded prompt (see `encode_prompts`), in input order, up to and including a stop.

    Args:
        prompt_ids: encoded prompts; encode once and reuse them for several models (base and tuned).
        max_new_tokens: tokens generated at most per prompt.
        batch_size: prompts per generate() call; None: as many as fit in memory (`batch_size_from_memory`).
        stop_ids: tokens that end a row; default ops.data.chat_template.stop_token_ids.
        desc: the label of the batches' progress bar, shown on a terminal only (ops.core.progress).
    Raises:
        ValueError: batch_size is not positive.
    """
    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if not prompt_ids:
        return []
    if stop_ids is None:
        stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    if batch_size is None:
        batch_size = batch_size_from_memory(model, max(map(len, prompt_ids)) + max_new_tokens, len(prompt_ids))
    stops = set(stop_ids)
    results: list[list[int]] = [[] for _ in prompt_ids]
    was_training = model.training
    model.eval()
    try:
        batches = list(_longest_first([len(p) for p in prompt_ids], batch_size))
        for idx in progress(batches, desc=desc, unit="batch"):
            new = generate_ids_batch(model, tokenizer, [prompt_ids[i] for i in idx], max_new_tokens, stop_ids)
            for i, ids in zip(idx, new):
                end = next((n + 1 for n, t in enumerate(ids) if t in stops), len(ids))
                results[i] = ids[:end]
    finally:
        model.train(was_training)
    return results


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int | None = None) -> list[str]:
    """Greedy completions of `prompts`, in order, `batch_size` at a time (None: as many as fit in memory)."""
    stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    new = generate_ids(model, tokenizer, encode_prompts(tokenizer, prompts), max_new_tokens, batch_size, stop_ids)
    return [answer_text(ids, tokenizer, stop_ids) for ids in new]
