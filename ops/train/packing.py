"""Packed batches: a batch's examples share rows, position ids restart per example, attention never crosses them.

transformers 5 reads packed rows from `position_ids` alone (masking_utils.find_packed_sequence_indices: a new
example starts wherever the position does not follow the previous one) when no attention mask and no cache are
given, and builds a block-diagonal causal mask for eager and sdpa; flash_attention_2 takes the same position ids
(modeling_flash_attention_utils) as a varlen call. So a packed batch carries `input_ids`, `labels` and
`position_ids`, no attention mask, and the model must run without a cache (`use_cache=False`; with a cache,
transformers builds a plain causal mask and examples see each other).

A batch is packed first-fit-decreasing into rows no longer than its longest example, not into one long row:
eager and sdpa attention cost grows with the square of the row length, so one 1,800-token row trained no faster
than 16 padded rows of 211 on the CPU, while 10 packed rows of 211 trained 1.6x faster (embedded-size model,
AVX2 CPU, 1 thread). The step still holds the same examples and the same target tokens, so the Trainer's loss
(a mean over target tokens in the step) and its per-step weighting are unchanged: packing changes speed only.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..data.tokens import IGNORE_INDEX, pad_batch
from ..model.device import DeviceInfo
from .callbacks import TokenCounter

# Attention implementations that honour restarting position ids (transformers 5.x masking_utils and
# modeling_flash_attention_utils); flash_attention_2 needs CUDA and is allowed as documented, untested here.
PACKING_ATTENTION = ("eager", "sdpa", "flash_attention_2")
CROSSING_SHARE = 0.25  # packing must move log-probabilities < 1/4 as much as attending across examples does
LENGTH_COLUMN = "length"  # the column LengthGroupedSampler reads (TrainingArguments.length_column_name's default)


class BatchTokens(TokenCounter):
    """Real tokens (`tokens`, for tokens/s) and all positions the model computed (`slots`, padding included)."""

    def __init__(self) -> None:
        super().__init__()
        self.slots = 0

    def add(self, real: int, slots: int) -> None:
        self.tokens += real
        self.slots += slots

    def padding_share(self) -> float:
        """Padding positions / all positions in the batches counted so far (0.0 before any batch)."""
        return 1 - self.tokens / self.slots if self.slots else 0.0


def pack_into_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: indices of `lengths` grouped into rows whose lengths sum to at most `capacity`.

    Args:
        lengths: tokens per example.
        capacity: tokens per row; at least the longest example.
    Returns:
        rows of example indices, longest examples first; every index appears exactly once.
    Raises:
        ValueError: an example longer than `capacity`.
    """
    if lengths and max(lengths) > capacity:
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a packed row of {capacity}")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([]), room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= lengths[i]
    return rows


def pack_batch(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pack examples into rows as long as the longest one: input_ids, labels and position ids, no attention mask.

    Each example's position ids start at 0 and its first label is IGNORE_INDEX (so the previous example's last
    token predicts nothing across the boundary; that label is never a target unpacked either, since the loss
    shifts labels by one). A row shorter than the longest is right-padded with pad tokens whose position ids
    restart at 0 too: a segment of its own that no real token attends to, with IGNORE_INDEX labels.

    Args:
        rows: tokenized examples with `input_ids` and `labels` of the same length.
        pad_id: the tokenizer's pad token id.
    Returns:
        `input_ids`, `labels`, `position_ids`: long tensors of shape (packed rows, longest example).
    """
    lengths = [len(r["input_ids"]) for r in rows]
    width = max(lengths)
    ids, labels, positions = [], [], []
    for members in pack_into_rows(lengths, width):
        row_ids, row_labels, row_pos = [], [], []
        for i in members:
            row_ids += list(rows[i]["input_ids"])
            row_labels += [IGNORE_INDEX] + list(rows[i]["labels"][1:])
            row_pos += list(range(lengths[i]))
        tail = width - len(row_ids)
        ids.append(row_ids + [pad_id] * tail)
        labels.append(row_labels + [IGNORE_INDEX] * tail)
        positions.append(row_pos + list(range(tail)))
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(positions)}


def batch_collator(pad_id: int, counter: BatchTokens, packing: bool,
                   counting: Callable[[], bool] = lambda: True) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """The training collator: packed rows (`pack_batch`) or right-padded ones (ops.data.tokens.pad_batch).

    Counts each batch's real tokens and all its positions into `counter` (padding share, real tokens/s) while
    `counting()` is true: the Trainer's eval loop uses the same collator, and its batches are no training tokens.
    """

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = pack_batch(rows, pad_id) if packing else pad_batch(rows, pad_id)
        if counting():
            counter.add(sum(len(r["input_ids"]) for r in rows), batch["input_ids"].numel())
        return batch

    return collate


def check_packing_support(model: torch.nn.Module, device: DeviceInfo) -> None:
    """Refuse packing where the model's attention would let packed examples see each other; make it safe otherwise.

    Sets `use_cache=False` in the model's config: with a cache (the eval loop runs without gradient checkpointing,
    so transformers would make one) the packed position ids are ignored. Then checks the attention implementation
    and verifies it on the model itself (`packed_logprob_gaps`): packing must leave an example's log-probabilities
    far closer to its own than attention across examples would.

    Args:
        model: the model about to be trained (before LoRA is added: its dropout would make the check random).
        device: where it trains (flash_attention_2 needs CUDA).
    Raises:
        ValueError: an attention implementation other than eager, sdpa or flash_attention_2 (CUDA only), or a
            model whose packed log-probabilities move as if attention crossed the examples.
    """
    config = model.config
    config.use_cache = False
    attention = getattr(config, "_attn_implementation", None)
    if attention not in PACKING_ATTENTION or (attention == "flash_attention_2" and device.type != "cuda"):
        raise ValueError(f"packing needs attention that honours restarting position ids (eager, sdpa, or "
                         f"flash_attention_2 on CUDA); this model runs {attention!r} on {device.type}: "
                         "set packing: false")
    gap, crossing = packed_logprob_gaps(model)
    # Relative, not a fixed tolerance: bf16 sums in another order move log-probabilities by an amount that grows
    # with the model (not measured here on a large one); attention that crosses examples moves them as crossing does.
    if gap > CROSSING_SHARE * crossing:
        raise ValueError(f"packing refused: {type(model).__name__} with {attention} attention lets packed examples see "
                         f"each other (packed log-probabilities move by {gap:.3g}, attention across the examples moves "
                         f"them by {crossing:.3g}); set packing: false")


@torch.no_grad()
def packed_logprob_gaps(model: torch.nn.Module, first: int = 12, second: int = 9) -> tuple[float, float]:
    """How far packing moves an example's log-probabilities, and how far attending across examples would.

    A `second`-token example is scored alone, packed behind a `first`-token one (position ids restarting, no
    mask), and behind it with an all-ones attention mask (the same positions; a mask turns packed detection off,
    so attention crosses into the first example).

    Returns:
        (largest |log p| change packed vs alone, largest change crossing vs alone), in nats.
    Runs in eval mode (no dropout) and puts the model back in its mode; 4-bit layers that bitsandbytes repacked
    for the eval pass are restored to the standard layout (ops.model.cpu_kernels).
    """
    from ..model.cpu_kernels import restore_standard_layout

    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randint(4, vocab, (1, n), generator=generator).to(device) for n in (first, second))
    ids = torch.cat([a, b], 1)
    positions = torch.cat([torch.arange(first), torch.arange(second)])[None].to(device)
    was_training = model.training
    model.eval()

    def logprobs(**inputs) -> torch.Tensor:
        return model(**inputs, use_cache=False).logits[:, -second:].float().log_softmax(-1)

    try:
        alone = logprobs(input_ids=b)
        packed = logprobs(input_ids=ids, position_ids=positions)
        crossed = logprobs(input_ids=ids, position_ids=positions, attention_mask=torch.ones_like(ids))
    finally:
        model.train(was_training)
        restore_standard_layout(model)
    return float((packed - alone).abs().max()), float((crossed - alone).abs().max())
