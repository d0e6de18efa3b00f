"""NF4 quantization through bitsandbytes on the tiny base: storage cost, error, flags, and a checkpoint that reloads."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from safetensors import safe_open

from ops.model.base_resolution import resolve_base
from ops.model.cpu_features import cpu_features
from ops.model.device import DeviceInfo, compute_dtype_choice
from ops.model.embedded import EMBEDDED_ID
from ops.model.loading import load_quantized_model
from ops.model.quantize import build_bnb_config, quantization_error, quantize_base, storage_bits
from ops.model.spec import QuantSpec

TINY_LINEAR_PARAMS = 2 * (4 * 64 * 64 + 3 * 64 * 120)  # 2 layers of q, k, v, o (64x64) and gate, up, down (64x120)


def quiet(_):
    pass


@pytest.fixture(scope="module")
def no_double_quant(tiny_base_dir, cpu, tmp_path_factory) -> dict:
    return quantize_base(resolve_base(str(tiny_base_dir)), QuantSpec(double_quant=False), cpu,
                         tmp_path_factory.mktemp("no-double-quant"), log=quiet)


def original_linear_weights(base_dir) -> dict[str, torch.Tensor]:
    with safe_open(str(base_dir / "model.safetensors"), framework="pt") as sf:
        return {k: sf.get_tensor(k) for k in sf.keys() if "_proj." in k}


def test_double_quant_costs_about_4_127_bits_per_weight(tiny_quantized):
    summary = tiny_quantized[1]
    assert summary.double_quant is True and summary.quant_type == "nf4"
    # 4 + 8/64 + (32 + 32)/(64 * blocks of 256): 4.1359 here, where each small layer pays a whole second-level block
    assert 4.12 <= summary.bits_per_quantized_weight <= 4.14
    assert summary.bits_per_quantized_weight <= 4.2
    assert summary.quantized_layers == 14 and summary.quantized_params == TINY_LINEAR_PARAMS
    assert summary.total_params == summary.quantized_params + summary.unquantized_params
    assert summary.bf16_size_bytes == 2 * summary.total_params
    # auto: bf16 compute on CPUs with AVX512-BF16/AMX, fp32 on the others, and the summary says why
    dtype, reason = compute_dtype_choice("cpu")
    assert summary.compute_dtype == str(dtype).removeprefix("torch.") and summary.device == "cpu"
    assert summary.compute_dtype_reason == reason and summary.cpu == cpu_features().describe()
    # gate, up (out 120) and down (in 120) of both blocks stay off bnb's packed kernel where the CPU has one
    assert summary.layers_off_packed_cpu_kernel == (6 if cpu_features().bnb_packed_kernel else 0)
    assert summary.reload_check is True and summary.layers_measured_for_error == 14


def test_without_double_quant_it_costs_4_5_bits(no_double_quant, tiny_quantized):
    assert no_double_quant.double_quant is False
    assert no_double_quant.bits_per_quantized_weight == pytest.approx(4.5, abs=0.01)  # 4 + 32/64 (fp32 absmax)
    assert no_double_quant.quantized_params == tiny_quantized[1].quantized_params
    # double quantization changes the scales only, not the 4-bit codes' accuracy (to within a few percent)
    assert no_double_quant.mean_abs_quant_error == pytest.approx(tiny_quantized[1].mean_abs_quant_error, rel=0.05)


def test_quantization_error_is_small_but_real(tiny_quantized, tiny_base_dir):
    error = tiny_quantized[1].mean_abs_quant_error
    mean_abs_weight = torch.cat([w.abs().flatten() for w in original_linear_weights(tiny_base_dir).values()]).mean().item()
    assert 0 < error < 0.15 * mean_abs_weight  # NF4 is lossy, but keeps ~90% of each weight's magnitude


def test_size_on_disk_counts_4_bit_codes_and_the_rest_in_the_compute_dtype(tiny_quantized):
    summary = tiny_quantized[1]
    codes_and_scales = summary.bits_per_quantized_weight * summary.quantized_params / 8
    # embeddings, head and norms stay in the compute dtype: fp32, or bf16 on CPUs with AVX512-BF16/AMX
    rest = getattr(torch, summary.compute_dtype).itemsize * summary.unquantized_params
    overhead = summary.size_on_disk_bytes - codes_and_scales - rest
    # per layer ~2 kB: fp32 codebooks of 16 and 256 entries (1088 B), the JSON quant state, 6 header entries
    assert 1088 * summary.quantized_layers < overhead < 2500 * summary.quantized_layers
    # The linear layers alone take under half of their bf16 size even at this toy width.
    assert summary.size_on_disk_bytes - rest < 0.5 * 2 * summary.quantized_params


def test_default_embedded_base_is_smaller_on_disk_than_bf16(cpu, tmp_path):
    summary = quantize_base(resolve_base(EMBEDDED_ID), QuantSpec(), cpu, tmp_path, log=quiet)
    assert summary.size_on_disk_bytes < 0.5 * summary.bf16_size_bytes
    assert summary.bits_per_quantized_weight == pytest.approx(4.127, abs=0.002)  # the QLoRA paper's figure


def test_saved_checkpoint_reloads_as_nested_nf4(tiny_quantized, tiny_base_dir, cpu):
    model = load_quantized_model(tiny_quantized[0] / "model", cpu)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == 14 and "lm_head" not in layers
    for layer in layers.values():
        assert layer.weight.dtype == torch.uint8
        assert layer.weight.quant_state.nested is True and layer.weight.quant_state.quant_type == "nf4"
        assert layer.weight.quant_state.blocksize == 64
    q_proj = layers["model.layers.0.self_attn.q_proj"]
    assert storage_bits(q_proj.weight) == 64 * 64 * 4 + 64 * 8 + 32 + 32  # codes, uint8 scales, one fp32 block + offset
    error, measured = quantization_error(layers, tiny_base_dir)
    assert measured == 14 and error == pytest.approx(tiny_quantized[1].mean_abs_quant_error, rel=1e-6)
    assert model.config.use_cache is False


def test_tokenizer_is_saved_with_the_model(tiny_quantized, tiny_base_dir):
    model_dir = tiny_quantized[0] / "model"
    assert (model_dir / "tokenizer.json").read_text() == (tiny_base_dir / "tokenizer.json").read_text()


def test_bnb_config_follows_spec_and_device(cpu):
    config = build_bnb_config(QuantSpec(), cpu)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == compute_dtype_choice("cpu")[0]
    fp4 = build_bnb_config(QuantSpec(quant_type="fp4", double_quant=False, compute_dtype="bfloat16"), cpu)
    assert fp4.bnb_4bit_quant_type == "fp4" and not fp4.bnb_4bit_use_double_quant
    assert fp4.bnb_4bit_compute_dtype == torch.bfloat16
    gpu = DeviceInfo("cuda", "any", torch.float16)
    assert build_bnb_config(QuantSpec(compute_dtype="float16"), gpu).bnb_4bit_compute_dtype == torch.float16


def test_no_local_source_means_no_error_measured():
    assert quantization_error({}, None) == (None, 0)
