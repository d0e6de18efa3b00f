"""The tiny test model, defined once: its architecture, and its real NF4 quantization with fp32 compute.

intermediate_size 120 is a multiple of neither 32 nor 64, as real MLP widths often are not (the embedded
default's 688, Qwen2's 352): gate/up (out 120) and down (in 120) are shapes bitsandbytes' packed CPU kernel
cannot take. Importing this module imports no torch; `quantize_fp32` does when called.
"""

from __future__ import annotations

from pathlib import Path

TINY_ARCH = dict(hidden_size=64, intermediate_size=120, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)


def quantize_fp32(base_dir: Path, out_dir: Path):
    """Quantize `base_dir` to NF4 with double quantization and fp32 compute (the same numbers on every CPU kind),
    save it with its tokenizer to `out_dir`, and return the loaded 4-bit model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), quantization_config=bnb, device_map="cpu",
                                                 dtype=torch.float32)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(out_dir)
    return model

# The training settings the tiny random model learns with (configs/demo.yaml's): the QLoRA paper's defaults are
# for pretrained 7B+ models, and a randomly initialised base learns from scratch only with a higher, decaying rate.
TINY_RECIPE = dict(r=16, alpha=32, dropout=0.05, learning_rate=1e-3, lr_scheduler="cosine", max_grad_norm=1.0)


def tiny_report(samples: list[dict[str, str]] | None = None):
    """A valid EvaluationReport with made-up scores, for tests that register an adapter without evaluating it."""
    from ops.evaluation.report import EvaluationReport, ModelScores

    scores = ModelScores(eval_loss=1.5, perplexity=4.48, exact_match=0.25, rouge_l=0.5)
    samples = samples if samples is not None else [
        {"prompt": "Name a colour.", "reference": "red", "base": "blue", "tuned": "red"},
        {"prompt": "Count: 1, 2,", "reference": "3", "base": "2", "tuned": "3"}]
    return EvaluationReport(base=scores, tuned=scores, delta=scores, eval_rows=4, generation_rows=len(samples),
                            device="cpu", compute_dtype="float32", seconds=1.0, samples=samples)


def write_tiny_report(path: Path) -> Path:
    """`tiny_report()` written where registration reads its report.json."""
    from ops.evaluation.report import write_report

    return write_report(tiny_report(), path)
