"""benchmarks/gpu.py without a GPU: it skips cleanly, and its model building and training loop run on the CPU
with a tiny Llama shape (the same code the GPU run takes, only the device, dtype and sizes differ)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_skips_cleanly_without_cuda():
    result = gpu.run()
    assert result["met"] is None and result["table"] == [] and "no CUDA GPU" in result["notes"]


def test_qlora_model_is_4bit_with_lora_and_trains_on_cpu():
    import bitsandbytes as bnb

    arch = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, vocab_size=256, tie_word_embeddings=True)
    model, n = gpu.build_qlora_model(arch, "cpu", torch.float32)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7 and all(m.weight.bnb_quantized and m.weight.quant_state.nested for m in layers)
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128  # q, k+v (2 kv heads x 16), o, gate/up/down
    assert n == 2 * per_layer + 64 * 256  # the tied output head is a matmul too
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    got = gpu.train_speed(model, 256, batch=2, seq_len=16, steps=2, warmup=1, optimizer_cls=bnb.optim.AdamW32bit)
    assert got["tokens_per_s"] > 0 and 3.0 < got["loss"] < 8.0  # random init: about ln(256) = 5.5


def test_peak_flops_table():
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756 and gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert gpu.peak_tflops("Some Future GPU") is None
