"""Generation batch size from memory: the per-row estimate from the model config, and the batch it allows."""

from __future__ import annotations

import pytest
import torch

from ops.model.device import DeviceInfo
from ops.model.generation import MAX_AUTO_BATCH, MEMORY_SHARE, batch_size_from_memory, generate_ids, row_bytes
from ops.model.loading import load_quantized_model, load_tokenizer

CPU = DeviceInfo("cpu", "test-cpu", torch.float32)


@pytest.fixture(scope="module")
def model(tiny_quantized):
    return load_quantized_model(tiny_quantized[0] / "model", CPU)


def test_row_bytes_counts_kv_cache_logits_and_one_layer(model):
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    seq = 100
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * seq * 4
    logits = 3 * seq * c.vocab_size * 4
    layer = (c.num_attention_heads * seq * seq + seq * (3 * c.intermediate_size + 4 * c.hidden_size)) * 4
    assert row_bytes(c, seq) == kv + logits + layer
    assert row_bytes(c, 2 * seq) > 2 * row_bytes(c, seq) - 1  # at least linear in the length


def test_batch_size_is_what_fits_in_a_share_of_free_memory(model):
    per_row = row_bytes(model.config, 64)
    assert batch_size_from_memory(model, 64, rows=1000, free_bytes=int(10 * per_row / MEMORY_SHARE)) == 10
    assert batch_size_from_memory(model, 64, rows=1000, free_bytes=0) == 1  # never below one row
    assert batch_size_from_memory(model, 64, rows=7, free_bytes=2**40) == 7  # never more rows than there are
    assert batch_size_from_memory(model, 64, rows=10**6, free_bytes=2**50) == MAX_AUTO_BATCH
    measured = batch_size_from_memory(model, 64, rows=10**6)  # this machine's free memory: a 2-layer model fits
    assert 1 <= measured <= MAX_AUTO_BATCH


def test_generated_ids_stop_after_the_first_stop_token(model, tiny_quantized):
    tokenizer = load_tokenizer(tiny_quantized[0] / "model")
    prompt = [[tokenizer.bos_token_id] + tokenizer("red blue", add_special_tokens=False)["input_ids"]]
    free_run = generate_ids(model, tokenizer, prompt, 6, stop_ids=[])[0]
    assert len(free_run) == 6
    stopped = generate_ids(model, tokenizer, prompt, 6, stop_ids=[free_run[2]])[0]
    assert stopped == free_run[: free_run.index(free_run[2]) + 1]
    with pytest.raises(ValueError, match="batch_size must be > 0, got 0"):
        generate_ids(model, tokenizer, prompt, 6, batch_size=0)
