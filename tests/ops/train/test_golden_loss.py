"""Golden losses: five real QLoRA steps on the tiny model, fixed seed, compared with recorded values.

As torchtune's recipe tests do (tests/recipes/test_lora_finetune_single_device.py): anything that changes what
training computes (LoRA init, masking, the optimizer, the schedule, the collator, the 4-bit base) moves these
numbers. The compute dtype is pinned to float32 and the base quantized with float32 compute, so a CPU with
AVX512-BF16/AMX (where `auto` would pick bf16) computes the same numbers; fp32 sums in other SIMD orders differ
by about 1e-6 relative, far inside the tolerance.
"""

from __future__ import annotations

import pytest
import torch

from ops.model.device import DeviceInfo
from ops.train.spec import TrainSpec
from ops.train.trainer import train_adapter
from tests.tiny import TINY_RECIPE, quantize_fp32

# (step, training loss in nats per target token), recorded on an AVX2-only 2-core CPU, torch 2.13.0+cpu,
# transformers 5.24, peft 0.21, bitsandbytes 0.50.2 (2026-11-29); two runs there gave identical values.
GOLDEN = [(1, 6.2822265625), (2, 6.337497234344482), (3, 6.191410541534424), (4, 6.153774261474609),
          (5, 6.075187683105469)]
FP32_CPU = DeviceInfo("cpu", "golden-test", torch.float32, "float32: pinned for the golden values")


def test_five_steps_reproduce_the_golden_losses(tiny_base_dir, tiny_dataset, tmp_path):
    model_dir = tmp_path / "base-4bit"
    quantize_fp32(tiny_base_dir, model_dir)
    spec = TrainSpec(max_steps=5, batch_size=8, logging_steps=1, warmup_steps=1, save_steps=5, seed=0,
                     **TINY_RECIPE)
    result = train_adapter(model_dir, tiny_dataset[0], tmp_path / "out", spec, FP32_CPU, log=lambda _: None)
    assert [step for step, _ in result.loss_history] == [step for step, _ in GOLDEN]
    torch.testing.assert_close([loss for _, loss in result.loss_history], [loss for _, loss in GOLDEN],
                               rtol=1e-4, atol=0.0)
    assert result.final_loss == pytest.approx(GOLDEN[-1][1], rel=1e-4)
