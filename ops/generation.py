"""Greedy batched generation: prompts in, completions out (used by evaluation and by the served model)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .tokens import with_bos


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _model_device(model) -> torch.device:
    """Where the inputs go: the device of the first parameter (works for PEFT wrappers and 4-bit models)."""
    return next(model.parameters()).device


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt exactly as training saw them: bos (when the tokenizer has one), then the text."""
    return [with_bos(tokenizer, ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Complete one batch of prompts greedily; return only the new text, stripped."""
    # Left padding keeps every prompt's last token at the end, where decoder-only models continue from.
    enc = tokenizer.pad({"input_ids": encode_prompts(tokenizer, prompts)}, padding=True, padding_side="left",
                        return_tensors="pt").to(_model_device(model))
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,  # greedy: deterministic, so base and tuned numbers are comparable run to run
        num_beams=1,
        use_cache=True,  # training loads set use_cache=False; generation wants the KV cache
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = out[:, enc["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of `prompts`, in order, `batch_size` at a time."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        return [text for batch in _batches(prompts, batch_size)
                for text in generate_batch(model, tokenizer, batch, max_new_tokens)]
    finally:
        model.train(was_training)
