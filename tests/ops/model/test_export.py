"""Export of a real tiny adapter: 4-bit base dequantized, LoRA merged, loadable by plain transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ops.model.device import DeviceInfo
from ops.model.export import describe, export_dtype, export_merged
from ops.model.merge_check import MERGE_RTOL, MergeMismatch, check_merge, merge_tolerance


@pytest.fixture(scope="module")
def exported(tiny_quantized, tiny_adapter, cpu, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("export") / "merged"
    return export_merged(tiny_quantized[0] / "model", tiny_adapter[0] / "adapter", out, cpu,
                         prompt_format="alpaca", max_new_tokens=8)


def test_merged_model_has_no_quantization_and_no_adapter(exported):
    out = Path(exported.out_dir)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert exported.quantization_config_saved is False
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert "adapter_config.json" not in files


LOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
out = model.generate(**tok(["Give the first word."], return_tensors="pt"), max_new_tokens=3, do_sample=False)
linear = type(model.model.layers[0].self_attn.q_proj).__name__
print(json.dumps({"linear": linear, "peft": "peft" in sys.modules, "bnb": "bitsandbytes" in sys.modules,
                  "dtype": str(model.dtype), "tokens": out.shape[1]}))
"""


@pytest.mark.slow  # starts a subprocess
def test_plain_transformers_loads_it_without_peft_or_bitsandbytes(exported, tmp_path):
    proc = subprocess.run([sys.executable, "-c", LOAD, exported.out_dir], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["linear"] == "Linear" and not result["peft"] and not result["bnb"]
    assert result["dtype"] == f"torch.{exported.dtype}"


def test_difference_to_the_4bit_model_is_measured_and_small(exported, cpu):
    expected_dtype, _ = export_dtype(cpu)
    assert exported.dtype == str(expected_dtype).removeprefix("torch.")
    if expected_dtype == torch.float32 and exported.tolerance_reason.startswith("float32"):
        # fp32 on CPUs without native bf16: the dequantized weights are the same numbers the 4-bit kernels use;
        # only the merge's rounding (W + BA once, instead of Wx + B(Ax)) differs.
        assert "would emulate bf16" in exported.dtype_reason
        assert 0.0 <= exported.max_abs_logit_diff < 1e-2
        assert exported.generation_agreement == 1.0
    assert exported.mean_abs_logit_diff <= exported.max_abs_logit_diff
    assert exported.prompts == 4
    assert exported.max_abs_logit_diff <= exported.max_abs_logit_diff_allowed
    assert exported.untied_embeddings is False  # no embedding adapter: the tied base stays tied
    note = describe(exported)
    assert exported.dtype in note and "agree on" in note
    report = json.loads((Path(exported.out_dir) / "export_report.json").read_text())
    assert report["max_abs_logit_diff"] == exported.max_abs_logit_diff


def test_export_dtype_choice():
    cpu = DeviceInfo("cpu", "x", torch.float32)
    assert export_dtype(cpu, "bfloat16") == (torch.bfloat16, "bfloat16: requested")
    dtype, reason = export_dtype(cpu)
    assert dtype in (torch.float32, torch.bfloat16) and reason


# The tied tiny Llama of tests/conftest.py, with LoRA on the input embedding as well: merged naively, the
# embedding update would land in the shared output head too.
EMBED_TARGETS = ["q_proj", "v_proj", "embed_tokens"]


@pytest.fixture(scope="module")
def embed_adapter(tiny_quantized, tiny_dataset, cpu, tmp_path_factory) -> Path:
    from ops.train.spec import TrainSpec
    from ops.train.trainer import train_adapter
    from tests.tiny import TINY_RECIPE

    out = tmp_path_factory.mktemp("embed-adapter")
    spec = TrainSpec(max_steps=6, batch_size=8, save_steps=100, logging_steps=1, warmup_steps=1,
                     **{**TINY_RECIPE, "target_modules": EMBED_TARGETS})
    train_adapter(tiny_quantized[0] / "model", tiny_dataset[0], out, spec, cpu, log=lambda _: None)
    return out / "adapter"


def test_embedding_adapter_on_a_tied_base_exports_within_tolerance(tiny_quantized, embed_adapter, cpu, tmp_path):
    from safetensors.torch import load_file

    base_dir = tiny_quantized[0] / "model"
    assert json.loads((base_dir / "config.json").read_text())["tie_word_embeddings"] is True
    summary = export_merged(base_dir, embed_adapter, tmp_path / "merged", cpu, prompt_format="alpaca", max_new_tokens=8)
    assert summary.untied_embeddings is True
    assert summary.max_abs_logit_diff <= summary.max_abs_logit_diff_allowed
    assert summary.generation_agreement == 1.0
    out = tmp_path / "merged"
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    weights = load_file(out / "model.safetensors")
    base_embedding = load_file(base_dir / "model.safetensors")["model.embed_tokens.weight"].float()
    # The head keeps the base's matrix; only the input embedding carries the adapter's update.
    assert torch.equal(weights["lm_head.weight"].float(), base_embedding)
    assert not torch.allclose(weights["model.embed_tokens.weight"].float(), base_embedding)


def test_a_wrong_merge_fails_and_writes_nothing(tiny_quantized, embed_adapter, cpu, tmp_path, monkeypatch):
    import ops.model.export

    # Force the merge as it was before untying: the embedding update lands in the tied head as well. (The bound is
    # bf16's on CPUs whose bitsandbytes kernel computes in bf16; the wrong merge is ~15x past either.)
    monkeypatch.setattr(ops.model.export, "untie_adapted_embeddings", lambda peft_model: False)
    with pytest.raises(MergeMismatch, match=r"merged model differs from the 4-bit \+ adapter model by up to .* over "
                                            r"the .* allowed by the (float32|bfloat16) bound .*nothing was written") as excinfo:
        export_merged(tiny_quantized[0] / "model", embed_adapter, tmp_path / "merged", cpu, prompt_format="alpaca")
    assert "\n" not in str(excinfo.value)  # one line, as the CLI prints it
    assert list(tmp_path.iterdir()) == []  # neither the model nor the staging folder


def test_tolerance_follows_the_export_dtype_and_the_4bit_kernel(monkeypatch):
    import ops.model.merge_check

    cpu32 = DeviceInfo("cpu", "x", torch.float32)
    monkeypatch.setattr(ops.model.merge_check, "fused_bf16_cpu_kernel", lambda: False)
    assert merge_tolerance(torch.float32, cpu32)[0] == MERGE_RTOL[torch.float32]
    rtol, reason = merge_tolerance(torch.bfloat16, cpu32)
    assert rtol == MERGE_RTOL[torch.bfloat16] and reason.startswith("bfloat16 bound (export in bfloat16")
    # On AVX512-BF16 CPUs bitsandbytes' fused 4-bit kernel computes in bf16 even with fp32 compute.
    monkeypatch.setattr(ops.model.merge_check, "fused_bf16_cpu_kernel", lambda: True)
    rtol, reason = merge_tolerance(torch.float32, cpu32)
    assert rtol == MERGE_RTOL[torch.bfloat16] and "fused AVX512-BF16" in reason
    assert merge_tolerance(torch.float32, DeviceInfo("cuda", "gpu", torch.float32))[0] == MERGE_RTOL[torch.float32]
    assert merge_tolerance(torch.float32, DeviceInfo("cuda", "gpu", torch.float16))[0] == MERGE_RTOL[torch.float16]


def test_check_merge_bound_scales_with_the_logits_and_rejects_nan():
    cpu32 = DeviceInfo("cuda", "gpu", torch.float32)  # cuda: no CPU kernel question, the fp32 bound
    small = {"max_abs_logit_diff": 5e-5, "mean_abs_logit_diff": 1e-6, "max_abs_reference_logit": 0.2}
    assert check_merge(small, torch.float32, cpu32)["max_abs_logit_diff_allowed"] == pytest.approx(1e-4)
    assert check_merge({**small, "max_abs_logit_diff": 4e-4, "max_abs_reference_logit": 5.0},
                       torch.float32, cpu32)["max_abs_logit_diff_allowed"] == pytest.approx(5e-4)
    for bad in (2e-4, float("nan")):
        with pytest.raises(MergeMismatch):
            check_merge({**small, "max_abs_logit_diff": bad}, torch.float32, cpu32)
