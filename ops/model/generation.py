"""Greedy batched generation: prompts in, completions out (used by evaluation, the served model, the CLI, export).

Generation stops at eos or at the chat template's end-of-turn token, whichever comes first, and the answer is
cut there, so every caller gets the same text for the same tokens (ops.data.chat_template).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data.chat_template import answer_text, stop_token_ids
from ..data.tokens import with_bos


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
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int,
                   stop_ids: list[int] | None = None) -> list[str]:
    """Complete one batch of prompts greedily; return each answer: the new text up to the first stop token, stripped.

    `stop_ids` defaults to ops.data.chat_template.stop_token_ids (eos, end-of-turn, the model's configured eos ids).
    """
    if stop_ids is None:
        stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
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
        eos_token_id=stop_ids or None,  # every id stops a row; the rest of the batch goes on
    )
    new_tokens = out[:, enc["input_ids"].shape[1]:].tolist()
    return [answer_text(ids, tokenizer, stop_ids) for ids in new_tokens]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of `prompts`, in order, `batch_size` at a time."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    was_training = model.training
    model.eval()
    try:
        return [text for batch in _batches(prompts, batch_size)
                for text in generate_batch(model, tokenizer, batch, max_new_tokens, stop_ids)]
    finally:
        model.train(was_training)
