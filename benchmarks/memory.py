"""Peak memory of QLoRA against 16-bit LoRA on a 134M-parameter Llama, each run in its own fresh process.

    python -m benchmarks.memory

The base has SmolLM-135M's shape (30 layers, 576 wide, 49,152-token vocabulary, tied embeddings), randomly
initialised and saved as fp32 safetensors here (no download). Each configuration quantizes (QLoRA) or converts
(LoRA) it in one subprocess and trains it with the pipeline's own `train_adapter` in another (LoRA r=16 on all
linear layers, gradient checkpointing, batch 4 x 256 tokens, the same steps), reporting the process's peak RSS
(`resource.getrusage` ru_maxrss, what `peak_memory_bytes` reads on a CPU), the RSS after imports (the runtime) and
`ops.model.memory_estimate`'s prediction. bf16 configurations run only where the CPU computes bf16 in hardware
(AVX512-BF16/AMX), or with QLORA_BENCH_BF16=1: on an AVX2-only CPU one bf16 step of this model takes minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
             num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=2048)
BATCH, SEQ, STEPS, RANK = 4, 256, 1, 16  # the batch 4 x 256; one step reaches the peak (AdamW state included)
# (name, what changed, quantized, compute dtype, keep non-quantized weights in the compute dtype, needs fast bf16)
CONFIGS = [
    ("qlora_fp32_glibc", "QLoRA, fp32 compute, glibc's dynamic mmap threshold (before)", True, "float32", False, False),
    ("qlora_fp32", "QLoRA, fp32 compute, mmap threshold fixed (ops.model.device.fix_cpu_mmap_threshold)", True,
     "float32", False, False),
    ("lora16", "16-bit LoRA: bf16 weights, bf16 compute", False, "bfloat16", True, True),
    ("qlora_bf16_upcast", "QLoRA, bf16 compute, embeddings/head/norms upcast to fp32 (peft's default)", True,
     "bfloat16", False, True),
    ("qlora_bf16", "QLoRA, bf16 compute, embeddings/head kept bf16 (ops.model.loading.prepare_for_training)", True,
     "bfloat16", True, True),
]


def _rss_mb() -> float:
    from ops.model.device import peak_memory_bytes

    return peak_memory_bytes("cpu") / 2**20  # this process's own peak (VmHWM on Linux)


def _checkpoint(name: str) -> str:
    """The folder of a configuration's 4-bit or 16-bit checkpoint: one per (quantized, dtype)."""
    _, _, quantized, dtype, _, _ = next(c for c in CONFIGS if c[0] == name)
    return f"{'q' if quantized else 'lora'}-{dtype}"


def build(work: Path) -> tuple[Path, Path]:
    """The fp32 base (SmolLM-135M's shape, seeded random weights, the embedded tokenizer) and a 256-token dataset."""
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ops.core.paths import BUNDLED_DATASET
    from ops.model.embedded import build_tokenizer, corpus

    base, data = work / "base", work / "data"
    tokenizer = build_tokenizer(corpus(BUNDLED_DATASET), 1024)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE, pad_token_id=tokenizer.pad_token_id,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(10, SHAPE["vocab_size"], (BATCH * (STEPS + 1), SEQ), generator=g).tolist()
    split = datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * SEQ] * len(rows), "labels": rows})
    datasets.DatasetDict({"train": split, "eval": split.select(range(BATCH))}).save_to_disk(str(data))
    return base, data


def worker(stage: str, name: str, work: Path) -> dict:
    """One stage of one configuration in this (fresh) process: `quantize` or `train`."""
    import contextlib
    import io
    import warnings

    import torch

    from ops.model.base_resolution import resolve_base
    from ops.model.device import DeviceInfo
    from ops.model.memory_estimate import ModelShape, estimate_training_memory
    from ops.model.quantize import quantize_base
    from ops.model.spec import QuantSpec
    from ops.train.spec import TrainSpec
    from ops.train.trainer import train_adapter

    warnings.filterwarnings("ignore")
    _, _, quantized, dtype, keep, _ = next(c for c in CONFIGS if c[0] == name)
    device = DeviceInfo("cpu", "benchmark", getattr(torch, dtype), f"{dtype}: requested")
    runtime = _rss_mb()
    started = time.time()
    if name.endswith("_glibc"):  # the "before" row: glibc keeps its dynamic threshold
        import ops.model.device as device_module
        import ops.model.loading as loading_module

        device_module.fix_cpu_mmap_threshold = loading_module.fix_cpu_mmap_threshold = lambda *a: False
    if stage == "quantize":
        if (work / _checkpoint(name)).exists():
            return {}
        if quantized:
            quantize_base(resolve_base(str(work / "base")), QuantSpec(compute_dtype=dtype), device,
                          work / _checkpoint(name), log=lambda _: None)
        else:  # the 16-bit checkpoint LoRA trains on
            from transformers import AutoModelForCausalLM, AutoTokenizer

            target = work / _checkpoint(name) / "model"
            AutoModelForCausalLM.from_pretrained(str(work / "base"), dtype=device.compute_dtype).save_pretrained(target)
            AutoTokenizer.from_pretrained(str(work / "base")).save_pretrained(target)
        return {"peak_mb": _rss_mb(), "runtime_mb": runtime, "seconds": time.time() - started}
    if not keep:  # peft's behaviour, for the comparison: every 16-bit unquantized parameter cast to fp32
        import functools

        import ops.train.trainer as trainer

        trainer.prepare_for_training = functools.partial(trainer.prepare_for_training, upcast_to_fp32=True)
    spec = TrainSpec(max_steps=STEPS, batch_size=BATCH, r=RANK, warmup_steps=0, save_steps=10_000, logging_steps=1)
    with contextlib.redirect_stdout(io.StringIO()):
        result = train_adapter(work / _checkpoint(name) / "model", work / "data", work / f"{name}-out", spec, device,
                               log=lambda _: None)
    estimate = estimate_training_memory(
        ModelShape.from_config(work / "base"), BATCH, SEQ, RANK, quantized=quantized, compute_dtype=dtype,
        other_weights_dtype=dtype if keep else "float32", device_type="cpu")
    return {"peak_mb": result.peak_memory_bytes / 2**20, "runtime_mb": runtime, "seconds": time.time() - started,
            "estimate_mb": estimate.total / 2**20, "loss": result.final_loss}


def _spawn(stage: str, name: str, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--worker", stage, name, str(work)], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    from ops.model.cpu_features import cpu_features

    fast_bf16 = cpu_features().native_bf16 or os.environ.get("QLORA_BENCH_BF16") == "1"
    table, figures, skipped = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build(work)
        for name, change, quantized, dtype, keep, needs_bf16 in CONFIGS:
            if needs_bf16 and not fast_bf16:
                skipped.append(name)
                continue
            q = _spawn("quantize", name, work)
            t = _spawn("train", name, work)
            figures.update({f"{name}_peak_mb": round(t["peak_mb"]), f"{name}_estimate_mb": round(t["estimate_mb"]),
                            **({f"{name}_prepare_peak_mb": round(q["peak_mb"])} if q else {})})
            table.append({"change": change, "prepare peak MB": round(q["peak_mb"]) if q else "(shared)",
                          "train peak MB": round(t["peak_mb"]),
                          "runtime MB": round(t["runtime_mb"]), "estimate MB": round(t["estimate_mb"]),
                          "estimate error %": round(100 * (t["estimate_mb"] / t["peak_mb"] - 1), 1),
                          "train s": round(t["seconds"], 1), "loss": round(t["loss"], 4)})
    if "qlora_fp32_peak_mb" in figures and "qlora_fp32_glibc_peak_mb" in figures:
        fixed, before = figures["qlora_fp32_peak_mb"], figures["qlora_fp32_glibc_peak_mb"]
        figures["mmap_threshold_fixed_over_glibc"] = round(fixed / before, 3)
    ratio = None
    if "qlora_bf16_peak_mb" in figures and "lora16_peak_mb" in figures:
        ratio = figures["qlora_bf16_peak_mb"] / figures["lora16_peak_mb"]
        figures["qlora_over_lora16"] = round(ratio, 3)
    notes = (f"CPU {cpu_features().describe()}; batch {BATCH} x {SEQ} tokens, {STEPS} step(s), LoRA r={RANK}, "
             f"gradient checkpointing; peak = process peak RSS. ")
    if skipped:
        notes += (f"Skipped {', '.join(skipped)}: this CPU has no native bf16 and one bf16 step of this model takes "
                  "minutes (QLORA_BENCH_BF16=1 runs them anyway).")
    return {"name": "memory", "title": "Peak memory: QLoRA against 16-bit LoRA (134M Llama, CPU RSS)",
            "goal": "QLoRA peak <= 0.5x 16-bit LoRA", "met": None if ratio is None else ratio <= 0.5,
            "figures": figures, "table": table, "notes": notes, "plots": []}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], Path(sys.argv[4]))))
    else:
        print(json.dumps(run(), indent=2))
