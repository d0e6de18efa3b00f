"""Export of a real tiny adapter: 4-bit base dequantized, LoRA merged, loadable by plain transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ops.device import DeviceInfo
from ops.export import describe, export_dtype, export_merged


@pytest.fixture(scope="module")
def exported(tiny_quantized, tiny_adapter, cpu, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("export") / "merged"
    return export_merged(tiny_quantized[0] / "model", tiny_adapter[0] / "adapter", out, cpu,
                         prompt_format="alpaca", max_new_tokens=8)


def test_merged_model_has_no_quantization_and_no_adapter(exported):
    out = Path(exported["out_dir"])
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert exported["quantization_config_saved"] is False
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


def test_plain_transformers_loads_it_without_peft_or_bitsandbytes(exported, tmp_path):
    proc = subprocess.run([sys.executable, "-c", LOAD, exported["out_dir"]], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["linear"] == "Linear" and not result["peft"] and not result["bnb"]
    assert result["dtype"] == f"torch.{exported['dtype']}"


def test_difference_to_the_4bit_model_is_measured_and_small(exported):
    # fp32 on these CPUs: the dequantized weights are the same numbers the 4-bit kernels use; only the merge's
    # rounding (W + BA once, instead of Wx + B(Ax)) differs.
    assert exported["dtype"] == "float32" and "no native bf16" in exported["dtype_reason"]
    assert 0.0 <= exported["max_abs_logit_diff"] < 1e-2
    assert exported["mean_abs_logit_diff"] <= exported["max_abs_logit_diff"]
    assert exported["generation_agreement"] == 1.0 and exported["prompts"] == 4
    note = describe(exported)
    assert "float32" in note and "agree on 100%" in note
    report = json.loads((Path(exported["out_dir"]) / "export_report.json").read_text())
    assert report["max_abs_logit_diff"] == exported["max_abs_logit_diff"]


def test_export_dtype_choice():
    cpu = DeviceInfo("cpu", "x", torch.float32)
    assert export_dtype(cpu, "bfloat16") == (torch.bfloat16, "requested")
    dtype, reason = export_dtype(cpu)
    assert dtype in (torch.float32, torch.bfloat16) and reason
