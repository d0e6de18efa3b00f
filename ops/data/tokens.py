"""Token conventions every step shares: the ignored label, how bos is added, and right-padding a batch.

Training, evaluation and serving must agree on these exactly, or a model is scored or prompted on token
sequences it never saw; keeping them in one place is what makes them agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # the label torch's cross-entropy (and so transformers' causal LM loss) skips
MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")


def with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """`ids` starting with bos, added by hand: tokenizers differ in whether `add_special_tokens` adds one,
    and a chat template may have rendered it already."""
    bos = tokenizer.bos_token_id
    return ids if bos is None or ids[:1] == [bos] else [bos] + ids


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows of input_ids/labels to one length: pad token, IGNORE_INDEX labels, attention mask 0."""
    import torch  # here, not at the top: data preparation uses this module's conventions without torch

    width = max(len(r["input_ids"]) for r in rows)

    def pad(row: list[int], value: int) -> list[int]:
        return list(row) + [value] * (width - len(row))

    return {
        "input_ids": torch.tensor([pad(r["input_ids"], pad_id) for r in rows]),
        "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
        "labels": torch.tensor([pad(r["labels"], IGNORE_INDEX) for r in rows]),
    }
