"""4-bit QLoRA on the CPU: train step time and greedy generation speed with bf16 against fp32 compute.

    python -m benchmarks.cpu_compute_dtype        (or: python -m benchmarks cpu_compute_dtype)

The embedded-size model (ops/model/embedded.py DEFAULT_ARCH: a 4-layer, 256-wide Llama with a 688-wide MLP) is
quantized to NF4 with double quantization once per compute dtype, then trained with the pipeline's own
`train_adapter` (LoRA r=16 on all linear layers, gradient checkpointing, paged AdamW, batch 16 of <= 64 tokens)
and used for greedy generation. `auto` (ops/model/device.py) picks bf16 on CPUs with AVX512-BF16/AMX and fp32
elsewhere from figures like these; the goal checks that the dtype it picks here trains no slower than the other.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import datasets
import torch
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ops.data.preparation import prepare_dataset  # noqa: E402
from ops.data.spec import DataSpec  # noqa: E402
from ops.model.base_resolution import resolve_base  # noqa: E402
from ops.model.cpu_features import cpu_features  # noqa: E402
from ops.model.cpu_kernels import linear4bit_layers  # noqa: E402
from ops.model.device import DeviceInfo  # noqa: E402
from ops.model.embedded import build_embedded_base  # noqa: E402
from ops.model.generation import encode_prompts  # noqa: E402
from ops.model.loading import load_adapter_model, load_tokenizer  # noqa: E402
from ops.model.quantize import quantize_base  # noqa: E402
from ops.model.spec import QuantSpec  # noqa: E402
from ops.train.spec import TrainSpec  # noqa: E402
from ops.train.trainer import train_adapter  # noqa: E402

WARMUP_STEPS = 2  # the first steps allocate and warm caches; they are run but not timed
STEPS = 3  # timed steps per dtype: bf16 on an AVX2-only CPU takes ~3 s a step, and the benchmark ~3 minutes in all
SLACK = 1.1  # auto's pick may be up to 10% slower than the other dtype before it counts as the wrong pick
PROMPT = "How many animals are in the list?\ntiger river zebra"


class StepTimer(TrainerCallback):
    """Wall time and process CPU time of each optimizer step (on a shared machine CPU time shows the cost
    of a step without the time spent waiting for a core; with one thread it is the uncontended wall time)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._t0)
        self.cpu.append(time.process_time() - self._c0)


@torch.inference_mode()
def generation_tokens_per_second(model, tokenizer, batch: int, new_tokens: int) -> tuple[float, float]:
    """Greedy tokens per wall second and per CPU second for `batch` copies of one prompt, `new_tokens` each.

    The second of two runs is timed: the first packs layers (AVX512-BF16 CPUs) and warms caches.
    """
    enc = tokenizer.pad({"input_ids": encode_prompts(tokenizer, [PROMPT] * batch)}, padding=True,
                        padding_side="left", return_tensors="pt")
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       use_cache=True, pad_token_id=tokenizer.pad_token_id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return batch * new_tokens / wall, batch * new_tokens / cpu


def measure(dtype: torch.dtype, base: Path, data: Path, work: Path, steps: int) -> dict:
    """Train-step seconds (median), training tokens/s and generation tokens/s for one compute dtype."""
    name = str(dtype).removeprefix("torch.")
    device = DeviceInfo("cpu", "benchmark", dtype, f"{name}: requested")
    quantize_base(resolve_base(str(base)), QuantSpec(compute_dtype=name), device, work / name, log=lambda _: None)
    model_dir = work / name / "model"
    timer = StepTimer()
    spec = TrainSpec(max_steps=WARMUP_STEPS + steps, batch_size=16, save_steps=10_000, logging_steps=1, warmup_steps=1,
                     r=16, alpha=32, learning_rate=1e-3, lr_scheduler="cosine")  # the demo's recipe
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints each log dict without tqdm
        summary = train_adapter(model_dir, data, work / f"{name}-adapter", spec, device, callbacks=[timer],
                                log=lambda _: None)
    model = load_adapter_model(model_dir, work / f"{name}-adapter" / "adapter", device, log=lambda _: None)
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    result = {
        "dtype": name,
        "step_s": statistics.median(timer.wall[WARMUP_STEPS:]),
        "step_cpu_s": statistics.median(timer.cpu[WARMUP_STEPS:]),
        "train_tokens_s": summary.tokens_per_second,
        "gen_b16": generation_tokens_per_second(model, tokenizer, batch=16, new_tokens=32),
        "gen_b1": generation_tokens_per_second(model, tokenizer, batch=1, new_tokens=32),
    }
    layers = linear4bit_layers(model)
    result["packed"] = f"{sum(getattr(l.weight.quant_state, 'packing_format_for_cpu', False) for l in layers.values())}/{len(layers)}"
    return result


def run(steps: int = STEPS) -> dict:
    """Both compute dtypes measured on this CPU; the benchmark convention's dict (benchmarks/__init__.py)."""
    from benchmarks._plots import bars
    from ops.model.device import resolve_device

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU")
    warnings.filterwarnings("ignore", category=FutureWarning)
    features = cpu_features()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = build_embedded_base(work / "base")
        prepare_dataset(DataSpec(max_rows=400, max_seq_len=64), load_tokenizer(base), work / "data", log=lambda _: None)
        rows = [measure(dtype, base, work / "data", work, steps) for dtype in (torch.float32, torch.bfloat16)]
    by = {r["dtype"]: r for r in rows}
    picked = resolve_device().dtype_name
    other = "bfloat16" if picked == "float32" else "float32"
    table = [{"compute": r["dtype"], "train step wall s": r["step_s"], "train step cpu s": r["step_cpu_s"],
              "train tokens/s": r["train_tokens_s"], "generate tokens/s b16 (wall)": r["gen_b16"][0],
              "b16 (cpu)": r["gen_b16"][1], "b1 (wall)": r["gen_b1"][0], "b1 (cpu)": r["gen_b1"][1],
              "layers on packed kernel": r["packed"]} for r in rows]
    plot = bars("cpu_compute_dtype", [r["dtype"] for r in rows], [r["step_cpu_s"] for r in rows],
                "CPU seconds per train step", f"4-bit QLoRA train step on {features.describe()}")
    return {
        "name": "cpu_compute_dtype",
        "title": "4-bit QLoRA on the CPU: bf16 against fp32 compute (train step, generation)",
        "goal": f"the dtype `auto` picks on this CPU ({picked}) trains no slower than {other} "
                f"(within {SLACK - 1:.0%}, CPU seconds per step)",
        "met": by[picked]["step_cpu_s"] <= SLACK * by[other]["step_cpu_s"],
        "figures": {"bf16_over_fp32_step_cpu": by["bfloat16"]["step_cpu_s"] / by["float32"]["step_cpu_s"],
                    "bf16_over_fp32_generate_b16_cpu": by["bfloat16"]["gen_b16"][1] / by["float32"]["gen_b16"][1],
                    "fp32_step_cpu_s": by["float32"]["step_cpu_s"], "bf16_step_cpu_s": by["bfloat16"]["step_cpu_s"]},
        "table": table,
        "notes": f"CPU: {features.describe()}; torch capability {features.torch_capability}; bf16 flags "
                 f"{' '.join(features.flags) or 'none'}; bitsandbytes packed 4-bit kernel: "
                 f"{bool(features.bnb_packed_kernel)}; torch threads {torch.get_num_threads()}. Embedded model "
                 f"(4 layers, 256 wide, MLP 688), batch 16 x <=64 tokens, median of {steps} steps after "
                 f"{WARMUP_STEPS} warm-up steps; greedy generation of 32 tokens. wall = elapsed; cpu = this "
                 "process's CPU time (all its threads), which waiting for a busy core does not inflate.",
        "plots": [plot],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
