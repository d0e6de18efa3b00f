"""QLoRA on one CUDA GPU: tokens/s, peak memory and model FLOPs utilisation of Llama-shaped 1B and 8B models,
and paged against non-paged AdamW under a memory spike. Skips cleanly (met None) without CUDA.

    python -m benchmarks.gpu            # about 5 minutes on an H100/H200; nothing is downloaded

Models are randomly initialised from Llama 3.2 1B / Llama 3.1 8B shapes in bf16 on the GPU, then every linear
layer but the output head is swapped for a bitsandbytes NF4 `Linear4bit` with double quantization (what
`BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute)` loads). LoRA r=16 on all seven projections,
non-reentrant gradient checkpointing, bf16 compute, random token ids, STEPS timed steps after WARMUP.

FLOPs: model FLOPs utilisation (MFU) counts 6 N FLOPs per token (N: the weights of every matmul, output head
included; attention's score FLOPs left out), the usual convention, which does not count the recomputed forward
of gradient checkpointing; the hardware figure with that recompute is 8 N (HFU, also reported). QLoRA computes
no weight gradients for the frozen 4-bit weights, so the work actually done is nearer 4 N (+2 N recompute): the
6 N MFU flatters it, and is given because it is what other reports quote. Peak bf16 dense TFLOPS come from the
vendor's data sheets (PEAK_TFLOPS) or BENCH_GPU_PEAK_TFLOPS.

Paged optimizer: after one forward and backward of the 1B model, before the optimizer's first step allocates its
state, a tensor takes all free GPU memory but half of that state; then bitsandbytes' PagedAdamW32bit and its
non-paged AdamW32bit each try the step, each in a fresh subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ARCHS = {  # the public config.json shapes; random weights
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False),
}
BATCH, SEQ_LEN = 4, 2048  # 8,192 tokens a step for both sizes: the logits (fp32 in the loss) stay under ~10 GB
WARMUP, STEPS = 2, 6
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEAK_TFLOPS = {"H200": 989, "H100 PCIe": 756, "H100": 989, "A100": 312, "L40S": 362, "A10G": 70, "L4": 121}
SPIKE_TIMEOUT_S = 180
ROOT = Path(__file__).resolve().parents[1]


def build_qlora_model(arch: dict, device: str, dtype):
    """A randomly initialised Llama of shape `arch`, linear layers in NF4 (double quant), LoRA r=16 on top.

    Returns:
        (peft model, N = weights of every matmul, output head included, at their unquantized shapes)
    """
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):  # built where it runs, in `dtype` (_from_config sets the default dtype meanwhile)
        model = LlamaForCausalLM._from_config(LlamaConfig(**arch), dtype=dtype)
    matmul_weights = 0
    for parent in list(model.model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            matmul_weights += child.in_features * child.out_features
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=dtype, compress_statistics=True, quant_type="nf4", device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                         quant_type="nf4", module=q).to(device)  # .to() quantizes
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, q)
    matmul_weights += model.lm_head.in_features * model.lm_head.out_features
    model.is_loaded_in_4bit = True  # what from_pretrained(quantization_config=...) sets; peft dispatches on it
    for p in model.parameters():
        p.requires_grad_(False)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, lora), matmul_weights


def train_speed(model, vocab: int, batch: int, seq_len: int, steps: int, warmup: int, optimizer_cls) -> dict:
    """Time `steps` optimizer steps after `warmup`; tokens/s and peak memory (CUDA) of the timed steps."""
    import torch

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    optimizer = optimizer_cls([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq_len), device=device)
    model.train()
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": batch * seq_len * steps / seconds, "step_s": seconds / steps,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0, "loss": loss.item()}


def peak_tflops(name: str) -> float | None:
    """bf16 dense peak of the GPU named `name` (vendor data sheets), or BENCH_GPU_PEAK_TFLOPS; None if unknown."""
    if os.environ.get("BENCH_GPU_PEAK_TFLOPS"):
        return float(os.environ["BENCH_GPU_PEAK_TFLOPS"])
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def spike_step(paged: bool) -> dict:
    """One optimizer step of the 1B QLoRA model with all free GPU memory but half the optimizer state taken."""
    import bitsandbytes as bnb
    import torch

    model, _ = build_qlora_model(ARCHS["llama-1b"], "cuda", torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (bnb.optim.PagedAdamW32bit if paged else bnb.optim.AdamW32bit)(params, lr=1e-4)
    ids = torch.randint(0, ARCHS["llama-1b"]["vocab_size"], (BATCH, SEQ_LEN), device="cuda")
    model(input_ids=ids, labels=ids).loss.backward()
    state_bytes = 2 * 4 * sum(p.numel() for p in params)  # two fp32 moments per trainable parameter
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    hog, size = None, torch.cuda.mem_get_info()[0] - state_bytes // 2
    while hog is None and size > 0:
        try:
            hog = torch.empty(size, dtype=torch.uint8, device="cuda")
        except torch.OutOfMemoryError:
            size -= 2**28  # fragmentation: back off 256 MiB at a time
    started = time.perf_counter()
    try:
        optimizer.step()
        torch.cuda.synchronize()
        outcome = "stepped"
    except torch.OutOfMemoryError:
        outcome = "out of memory"
    return {"optimizer": type(optimizer).__name__, "outcome": outcome, "step_s": time.perf_counter() - started,
            "optimizer_state_mib": state_bytes / 2**20, "spike_gib": size / 2**30}


def _spike_in_subprocess(paged: bool) -> dict:
    """spike_step in a fresh process, so a failed or crashed step cannot spoil this one's CUDA context."""
    code = f"import json; from benchmarks.gpu import spike_step; print('RESULT' + json.dumps(spike_step({paged})))"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=SPIKE_TIMEOUT_S,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    except subprocess.TimeoutExpired:
        return {"optimizer": "paged" if paged else "non-paged", "outcome": f"no result in {SPIKE_TIMEOUT_S} s"}
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT")), None)
    if line is None:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"optimizer": "paged" if paged else "non-paged", "outcome": f"process failed: {last}"}
    return json.loads(line[len("RESULT"):])


def run() -> dict:
    import torch

    base = {"name": "gpu", "title": "QLoRA on one CUDA GPU: tokens/s, peak memory, MFU; paged vs non-paged AdamW",
            "goal": "paged AdamW steps through a memory spike that runs non-paged AdamW out of memory; "
                    "tokens/s, memory and MFU reported", "plots": []}
    if not torch.cuda.is_available():
        return {**base, "met": None, "figures": {}, "table": [],
                "notes": "Skipped: no CUDA GPU visible (torch.cuda.is_available() is False). Run on a machine with "
                         "one CUDA GPU: python -m benchmarks gpu"}
    import bitsandbytes as bnb

    from benchmarks._plots import bars

    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name)
    table, figures = [], {}
    for arch_name, arch in ARCHS.items():
        row = {"model": arch_name, "batch x seq": f"{BATCH} x {SEQ_LEN}"}
        try:
            model, n = build_qlora_model(arch, "cuda", torch.bfloat16)
            got = train_speed(model, arch["vocab_size"], BATCH, SEQ_LEN, STEPS, WARMUP, bnb.optim.PagedAdamW32bit)
            row.update({"matmul params (B)": n / 1e9, **got})
            if peak:
                row["MFU (6N)"] = got["tokens_per_s"] * 6 * n / (peak * 1e12)
                row["HFU (8N, with recompute)"] = got["tokens_per_s"] * 8 * n / (peak * 1e12)
            figures.update({f"{arch_name}_tokens_per_s": got["tokens_per_s"],
                            f"{arch_name}_peak_memory_gib": got["peak_memory_gib"]})
            if peak:
                figures[f"{arch_name}_mfu_6n"] = row["MFU (6N)"]
            del model
        except torch.OutOfMemoryError as err:
            row["error"] = f"out of memory: {str(err).splitlines()[0][:200]}"
        torch.cuda.empty_cache()
        table.append(row)
    spikes = [_spike_in_subprocess(paged) for paged in (True, False)]
    table += [{"model": "llama-1b", "spike test": s.get("optimizer"), "outcome": s["outcome"],
               "step_s": s.get("step_s"), "optimizer state MiB": s.get("optimizer_state_mib"),
               "spike GiB": s.get("spike_gib")} for s in spikes]
    plot = bars("gpu_tokens_per_s", [r["model"] for r in table[:2] if "tokens_per_s" in r],
                [r["tokens_per_s"] for r in table[:2] if "tokens_per_s" in r], "tokens / s", f"QLoRA training on {name}")
    return {**base, "met": spikes[0]["outcome"] == "stepped" and spikes[1]["outcome"] == "out of memory",
            "figures": figures, "table": table, "plots": [plot],
            "notes": f"GPU: {name}; peak bf16 dense {peak or 'unknown'} TFLOPS. MFU counts 6N FLOPs per token "
                     "(no recompute; 8N with gradient checkpointing's recompute is the HFU column). "
                     f"{STEPS} timed steps after {WARMUP} warm-up steps, paged AdamW 32-bit."}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
