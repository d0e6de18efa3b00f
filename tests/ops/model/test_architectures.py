"""Every step on tiny models of four architectures: quantize -> train -> evaluate -> generate -> export, through the ops.

Built locally from transformers' configs with the embedded tokenizer. The widths are the ones that broke on CPUs
with AVX512-BF16: a Llama MLP of 120 (not a multiple of 32 nor 64), Qwen2 and Mistral with grouped-query attention
and an MLP of 352 (their down_proj made bitsandbytes fail with "shape '[128, 5]' is invalid"), and a GPT-NeoX whose
every layer fits the packed kernel.
"""

from __future__ import annotations

import math

import pytest
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from ops.data.preparation import prepare_dataset
from ops.data.spec import DataSpec
from ops.evaluation.evaluator import evaluate_adapter
from ops.evaluation.spec import EvalSpec
from ops.model.base_resolution import resolve_base
from ops.model.cpu_features import cpu_features
from ops.model.cpu_kernels import linear4bit_layers, packed_kernel_rejects
from ops.model.export import export_dtype, export_merged
from ops.model.generation import generate
from ops.model.loading import load_adapter_model, load_tokenizer
from ops.model.quantize import quantize_base
from ops.model.spec import QuantSpec
from ops.train.spec import TrainSpec
from ops.train.trainer import train_adapter
from tests.tiny import TINY_RECIPE

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU:UserWarning")]
GQA = dict(hidden_size=128, intermediate_size=352, num_attention_heads=4, num_key_value_heads=2)
ARCHITECTURES = {
    # name: (config class, model class, config fields, 4-bit layers, layers the packed kernel cannot take)
    "llama": (LlamaConfig, LlamaForCausalLM, dict(hidden_size=64, intermediate_size=120, num_attention_heads=2,
                                                  num_key_value_heads=2), 14, 6),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, GQA, 14, 2),
    "mistral": (MistralConfig, MistralForCausalLM, GQA, 14, 2),
    "gpt_neox": (GPTNeoXConfig, GPTNeoXForCausalLM, dict(hidden_size=64, intermediate_size=256, num_attention_heads=2),
                 8, 0),
}


def build_base(out_dir, tokenizer, config_cls, model_cls, fields):
    import torch

    config = config_cls(**fields, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model_cls(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_step_runs_on_the_architecture(arch, tokenizer, cpu, tmp_path):
    config_cls, model_cls, fields, n_layers, n_unfit = ARCHITECTURES[arch]
    base = build_base(tmp_path / "base", tokenizer, config_cls, model_cls, fields)
    lines: list[str] = []

    quantized = quantize_base(resolve_base(str(base)), QuantSpec(), cpu, tmp_path / "quantized", log=lines.append)
    model_dir = tmp_path / "quantized" / "model"
    assert quantized.quantized_layers == n_layers and quantized.reload_check is True
    assert quantized.layers_off_packed_cpu_kernel == (n_unfit if cpu_features().bnb_packed_kernel else 0)
    assert quantized.mean_abs_quant_error > 0 and quantized.layers_measured_for_error == n_layers

    prepare_dataset(DataSpec(max_rows=120, max_seq_len=64), load_tokenizer(model_dir), tmp_path / "data",
                    log=lines.append)
    spec = TrainSpec(max_steps=3, batch_size=8, save_steps=100, logging_steps=1, warmup_steps=1, **TINY_RECIPE)
    trained = train_adapter(model_dir, tmp_path / "data", tmp_path / "adapter", spec, cpu, log=lines.append)
    assert trained.steps == 3 and all(math.isfinite(loss) for _, loss in trained.loss_history)
    adapter_dir = tmp_path / "adapter" / "adapter"

    report = evaluate_adapter(model_dir, adapter_dir, tmp_path / "data",
                              EvalSpec(max_new_tokens=4, num_generation_examples=4, batch_size=8), cpu, log=lines.append)
    assert math.isfinite(report.base.eval_loss) and math.isfinite(report.tuned.eval_loss)
    assert report.base.eval_loss != report.tuned.eval_loss  # the adapter changed something

    model = load_adapter_model(model_dir, adapter_dir, cpu, log=lines.append)
    unfit = [n for n, layer in linear4bit_layers(model).items()
             if packed_kernel_rejects(layer.out_features, layer.in_features, layer.weight.quant_state.blocksize)]
    assert len(unfit) == n_unfit
    completions = generate(model, load_tokenizer(model_dir, padding_side="left"), ["Give the first word.\nred blue"],
                           max_new_tokens=4, batch_size=1)
    assert len(completions) == 1 and isinstance(completions[0], str)

    exported = export_merged(model_dir, adapter_dir, tmp_path / "merged", cpu, max_new_tokens=4, reference=model)
    assert exported.quantization_config_saved is False and exported.dtype == str(export_dtype(cpu)[0])[6:]
    assert math.isfinite(exported.max_abs_logit_diff)
    if exported.dtype == "float32":  # the merge in fp32 only rounds differently from base + adapter
        assert exported.max_abs_logit_diff < 1e-2, exported
