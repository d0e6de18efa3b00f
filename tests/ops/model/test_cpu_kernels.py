"""bitsandbytes' packed 4-bit CPU kernel: the shape rule, the guard, exact restoring, named errors, bf16 compute on CPU.

bitsandbytes repacks a `Linear4bit` only on CPUs with AVX512-BF16. What does not need those instructions runs
everywhere: the shape rule, the guard (with the layers' flag set as bitsandbytes sets it there), bitsandbytes'
own converter (plain torch) to repack layers, and its shape assertions, which fire before any AVX512 code. The
real packed forward is tested only where the CPU has it.
"""

from __future__ import annotations

import math
import re

import bitsandbytes as bnb
import pytest
import torch
from bitsandbytes.functional import _convert_weight_packed_for_cpu, dequantize_4bit, has_avx512bf16

from ops.model.cpu_features import CpuFeatures
from ops.model.cpu_kernels import (
    PackedKernelError,
    guard_packed_kernel,
    linear4bit_layers,
    named_kernel_errors,
    packed_kernel_rejects,
    restore_standard_layout,
)
from ops.model.device import DeviceInfo
from ops.model.loading import load_quantized_model
from ops.model.quantize import quantization_error
from ops.train.spec import TrainSpec
from ops.train.trainer import StandardLayoutCallback, build_training_args, train_adapter
from tests.tiny import TINY_RECIPE

pytestmark = pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU:UserWarning")
PACKS_HERE = bool(has_avx512bf16())
needs_packed_kernel = pytest.mark.skipif(not PACKS_HERE, reason="this CPU has no AVX512-BF16: bitsandbytes never repacks here")
AMX = CpuFeatures("AVX512", avx512_bf16=True, amx_bf16=True, bnb_packed_kernel=True, flags=("avx512_bf16", "amx_bf16"))
# TINY_ARCH (tests/conftest.py): per block q, k, v, o are 64x64 (the kernel takes them), gate and up are [120, 64]
# and down is [64, 120] (it cannot), over 2 blocks.
PACKABLE = {"q_proj", "k_proj", "v_proj", "o_proj"}


def kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@pytest.mark.parametrize("out_features, in_features, expected", [
    (64, 64, None),
    (4096, 11008, None),  # Llama 2 7B down_proj
    (11008, 4096, None),
    (352, 128, None),  # Qwen2/Mistral tiny gate and up
    (128, 352, "in_features 352 is not a multiple of the blocksize 64"),  # their down: "shape '[128, 5]' is invalid"
    (688, 256, "out_features 688 is not a multiple of 32"),  # the embedded default's gate and up
    (256, 688, "in_features 688 is not a multiple of the blocksize 64"),
    (120, 64, "out_features 120 is not a multiple of 32"),
    (64, 120, "in_features 120 is not a multiple of the blocksize 64"),
    (96, 96, "in_features 96 is not a multiple of the blocksize 64"),
])
def test_shape_rule_names_what_the_packed_kernel_cannot_take(out_features, in_features, expected):
    assert packed_kernel_rejects(out_features, in_features, 64) == expected


def test_shape_rule_follows_the_blocksize():
    assert packed_kernel_rejects(64, 96, 32) is None
    assert packed_kernel_rejects(64, 96, 64) is not None
    assert packed_kernel_rejects(64, 192, 128) == "in_features 192 is not a multiple of the blocksize 128"


def test_loading_says_nothing_where_bitsandbytes_never_repacks_and_once_where_it_does(tiny_quantized, cpu):
    lines: list[str] = []
    model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lines.append)
    flags = {name: layer.support_avx512bf16_for_cpu for name, layer in linear4bit_layers(model).items()}
    assert {kind(n) for n, on in flags.items() if on} == (PACKABLE if PACKS_HERE else set())
    assert len(lines) == (1 if PACKS_HERE else 0)


def test_guard_keeps_unfit_layers_off_the_kernel_and_says_so_once(tiny_quantized, cpu):
    model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None)
    for layer in linear4bit_layers(model).values():
        layer.support_avx512bf16_for_cpu = True  # as bitsandbytes sets it on an AVX512-BF16 CPU
    lines: list[str] = []
    held = guard_packed_kernel(model, lines.append, features=AMX)
    assert sorted({kind(name) for name, _, _ in held}) == ["down_proj", "gate_proj", "up_proj"] and len(held) == 6
    assert all(layer.support_avx512bf16_for_cpu == (kind(name) in PACKABLE)
               for name, layer in linear4bit_layers(model).items())
    assert lines == ["6 of 14 4-bit layers stay on bitsandbytes' standard CPU kernel, not its packed kernel for this "
                     "CPU (AVX512 with AVX512-BF16, AMX-BF16): 4 x [120, 64] (out_features 120 is not a multiple of "
                     "32); 2 x [64, 120] (in_features 120 is not a multiple of the blocksize 64)"]
    assert guard_packed_kernel(model, lines.append, features=AMX) == [] and len(lines) == 1  # nothing left to hold


@pytest.mark.parametrize("layer_name, error", [
    ("model.layers.0.mlp.gate_proj", r"AssertionError: N must be divisible by block_n"),
    ("model.layers.1.mlp.down_proj", r"RuntimeError: shape '\[64, 1\]' is invalid for input of size 120"),
])
def test_a_layer_the_kernel_cannot_take_fails_in_one_named_line_and_runs_once_guarded(tiny_quantized, cpu, layer_name,
                                                                                       error):
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    reference = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None).eval()
    model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None).eval()
    layer = linear4bit_layers(model)[layer_name]
    layer.support_avx512bf16_for_cpu = True  # what bitsandbytes does on AVX512-BF16 CPUs; its converter fails anywhere
    with pytest.raises(PackedKernelError) as caught, torch.inference_mode(), named_kernel_errors("evaluate", model):
        model(ids)
    message = str(caught.value)
    assert "\n" not in message and caught.value.__cause__ is None and caught.value.__suppress_context__
    shape = "out_features 120, in_features 64" if "gate" in layer_name else "out_features 64, in_features 120"
    assert message.startswith(f"evaluate: bitsandbytes failed in 4-bit layer {layer_name} [{shape}, blocksize 64] "
                              f"on its packed CPU kernel (CPU: ")
    assert caught.value.original is not None
    assert re.search(error + "$", message), message

    fresh = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None).eval()
    linear4bit_layers(fresh)[layer_name].support_avx512bf16_for_cpu = True
    assert [name for name, _, _ in guard_packed_kernel(fresh, lambda _: None)] == [layer_name]
    with torch.inference_mode():
        assert torch.equal(fresh(ids).logits, reference(ids).logits)


def test_errors_outside_4bit_layers_pass_through_unchanged():
    with pytest.raises(ValueError, match="^not a kernel error$"), named_kernel_errors("evaluate"):
        raise ValueError("not a kernel error")


def repack_as_bitsandbytes_does(model) -> int:
    """Repack every layer the packed kernel takes, with bitsandbytes' own converter (plain torch, any CPU)."""
    packed = 0
    for layer in linear4bit_layers(model).values():
        if packed_kernel_rejects(layer.out_features, layer.in_features, layer.weight.quant_state.blocksize) is None:
            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data,
                                                                                         layer.weight.quant_state)
            packed += 1
    return packed


def cloned_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_restore_undoes_a_repacking_exactly(tiny_quantized, tiny_base_dir, cpu):
    model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None)
    layers = linear4bit_layers(model)
    before = cloned_state(model)
    dequantized = {n: dequantize_4bit(l.weight.data, l.weight.quant_state).clone() for n, l in layers.items()}
    error_before = quantization_error(layers, tiny_base_dir)

    assert repack_as_bitsandbytes_does(model) == 8
    q_proj = layers["model.layers.0.self_attn.q_proj"]
    assert q_proj.weight.quant_state.packing_format_for_cpu and q_proj.weight.quant_state.absmax.dtype == torch.bfloat16
    assert restore_standard_layout(model) == 8 and restore_standard_layout(model) == 0

    for name, layer in layers.items():
        qs = layer.weight.quant_state
        assert not getattr(qs, "packing_format_for_cpu", False) and qs.nested and qs.absmax.dtype == torch.uint8, name
        assert torch.equal(dequantize_4bit(layer.weight.data, qs), dequantized[name]), name
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before), [k for k in before if not torch.equal(after[k], before[k])]
    assert quantization_error(layers, tiny_base_dir) == error_before


def test_state_dict_after_a_repacking_holds_the_standard_weights(tiny_quantized, cpu):
    """What every save reads (save_pretrained, PEFT's adapter save, checkpoints): no explicit restore called."""
    model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None)
    before = cloned_state(model)
    repack_as_bitsandbytes_does(model)
    after = model.state_dict()  # bitsandbytes' own inverse here would round absmax through bf16
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before), [k for k in before if not torch.equal(after[k], before[k])]


def test_quantization_error_restores_a_repacked_layer_first(tiny_quantized, tiny_base_dir, cpu):
    model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None)
    error = quantization_error(linear4bit_layers(model), tiny_base_dir)
    repack_as_bitsandbytes_does(model)
    assert quantization_error(linear4bit_layers(model), tiny_base_dir) == error


@pytest.mark.parametrize("double_quant", [True, False])
def test_restore_without_the_remembered_state_rebuilds_it_from_the_kernels_bf16_scales(double_quant):
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(128, 64, bias=False, quant_type="nf4", compress_statistics=double_quant)
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 128), requires_grad=False, quant_type="nf4",
                                     compress_statistics=double_quant)._quantize("cpu")
    original = dequantize_4bit(layer.weight.data, layer.weight.quant_state).clone()
    layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data, layer.weight.quant_state)
    assert restore_standard_layout(torch.nn.Sequential(layer)) == 1
    qs = layer.weight.quant_state
    assert qs.nested == double_quant and not qs.packing_format_for_cpu and qs.dtype == torch.float32
    restored = dequantize_4bit(layer.weight.data, qs)
    # absmax went through bf16 (8 bits of mantissa) and, nested, through 8-bit blockwise codes again
    assert torch.allclose(restored, original, rtol=2 ** -7 + (0.01 if double_quant else 0), atol=0)
    assert (restored - original).abs().max() > 0  # not exact: the point of remembering the state in the guard


def test_training_after_a_repacking_matches_training_without_one(tiny_quantized, cpu):
    from peft import LoraConfig, get_peft_model

    def loss_and_grads(repack: bool):
        model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None)
        if repack:
            repack_as_bitsandbytes_does(model)
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
        for p in model.parameters():
            if p.requires_grad:  # LoRA B starts at zero; move it so that gradients reach the base path too
                torch.nn.init.normal_(p, std=0.02)
        if repack:  # the trainer's callback before each step, called here without a trainer
            StandardLayoutCallback().on_step_begin(None, None, None, model=model)
        model.train()
        ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    loss, grads = loss_and_grads(repack=False)
    loss_repacked, grads_repacked = loss_and_grads(repack=True)
    assert loss_repacked == loss and math.isfinite(loss)
    assert grads.keys() == grads_repacked.keys() and all(torch.equal(grads[k], grads_repacked[k]) for k in grads)


@needs_packed_kernel
def test_packed_forward_runs_and_everything_after_it_sees_the_standard_weights(tiny_quantized, tiny_base_dir, cpu):
    model = load_quantized_model(tiny_quantized[0] / "model", cpu, log=lambda _: None)
    before = cloned_state(model)
    error = quantization_error(linear4bit_layers(model), tiny_base_dir)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    model.train()
    with torch.no_grad():
        standard = model(ids).logits.float()  # training mode: bitsandbytes' standard kernel
    model.eval()
    with torch.inference_mode(), named_kernel_errors("test", model):
        packed = model(ids).logits.float()
    packed_now = {kind(n) for n, l in linear4bit_layers(model).items()
                  if getattr(l.weight.quant_state, "packing_format_for_cpu", False)}
    assert packed_now == PACKABLE
    assert torch.allclose(packed, standard, atol=5e-2, rtol=5e-2), (packed - standard).abs().max()  # bf16 kernel
    assert quantization_error(linear4bit_layers(model), tiny_base_dir) == error
    restore_standard_layout(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_bf16_compute_on_the_cpu_really_trains_in_bf16(tiny_quantized, tiny_dataset, tmp_path):
    """Forced here; `auto` picks it on CPUs with AVX512-BF16/AMX. A few steps: bf16 is emulated on AVX2 CPUs."""
    from transformers import TrainerCallback

    class AutocastProbe(TrainerCallback):
        def __init__(self):
            self.seen: list[tuple] = []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            def probe(module, inputs, output):
                self.seen.append((module.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            model.get_base_model().model.layers[0].mlp.register_forward_hook(probe)

    bf16 = DeviceInfo("cpu", "test-cpu", torch.bfloat16, "bfloat16: requested")
    spec = TrainSpec(max_steps=2, batch_size=4, save_steps=100, logging_steps=1, warmup_steps=1, **TINY_RECIPE)
    assert build_training_args(spec, bf16, tmp_path).bf16 is True
    probe = AutocastProbe()
    summary = train_adapter(tiny_quantized[0] / "model", tiny_dataset[0], tmp_path, spec, bf16,
                            callbacks=[probe], log=lambda _: None)
    assert probe.seen and all(seen == (True, True, torch.bfloat16) for seen in probe.seen), probe.seen[:3]
    assert summary.compute_dtype == "bfloat16" and summary.compute_dtype_reason == "bfloat16: requested"
    assert summary.steps == 2 and all(math.isfinite(loss) for _, loss in summary.loss_history)
