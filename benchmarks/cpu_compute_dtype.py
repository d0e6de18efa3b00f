"""4-bit QLoRA on the CPU: train step time and greedy generation speed with bf16 against fp32 compute.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cpu_compute_dtype.py [--steps 5] [--threads 2]

The embedded-size model (ops/model/embedded.py DEFAULT_ARCH: a 4-layer, 256-wide Llama with a 688-wide MLP) is
quantized to NF4 with double quantization once per compute dtype, then trained with the pipeline's own
`train_adapter` (LoRA r=16 on all linear layers, gradient checkpointing, paged AdamW, batch 16 of <= 64 tokens)
and used for greedy generation. It prints the CPU's flags and one table; `auto` (ops/model/device.py) picks bf16 on
CPUs with AVX512-BF16/AMX and fp32 elsewhere from figures like these. Nothing is asserted: it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
    spec = TrainSpec(max_steps=WARMUP_STEPS + steps, batch_size=16, save_steps=10_000, logging_steps=1, warmup_steps=1)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per dtype (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU")
    warnings.filterwarnings("ignore", category=FutureWarning)
    features = cpu_features()
    print(f"CPU: {features.describe()}; torch capability {features.torch_capability}; bf16 flags "
          f"{' '.join(features.flags) or 'none'}; bitsandbytes packed 4-bit kernel: {bool(features.bnb_packed_kernel)}; "
          f"torch threads {torch.get_num_threads()}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = build_embedded_base(work / "base")
        prepare_dataset(DataSpec(max_rows=400, max_seq_len=64), load_tokenizer(base), work / "data", log=lambda _: None)
        rows = [measure(dtype, base, work / "data", work, args.steps) for dtype in (torch.float32, torch.bfloat16)]
    print(f"\n4-bit QLoRA, embedded model (4 layers, 256 wide, MLP 688), batch 16 x <=64 tokens, "
          f"median of {args.steps} steps; greedy generation of 32 tokens")
    print("wall = elapsed time; cpu = this process's CPU time (all its threads), which waiting for a busy core does "
          "not inflate")
    print("| compute | train step, wall s | train step, cpu s | train tokens/s | generate tokens/s, batch 16 "
          "(wall / cpu) | batch 1 (wall / cpu) | layers on packed kernel |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['dtype']} | {r['step_s']:.3f} | {r['step_cpu_s']:.3f} | {r['train_tokens_s']:,.0f} | "
              f"{r['gen_b16'][0]:,.0f} / {r['gen_b16'][1]:,.0f} | {r['gen_b1'][0]:,.0f} / {r['gen_b1'][1]:,.0f} | "
              f"{r['packed']} |")
    fp32, bf16 = rows
    print(f"bf16 / fp32: train step cpu time x{bf16['step_cpu_s'] / fp32['step_cpu_s']:.2f}; generation speed per "
          f"cpu second, batch 16 x{bf16['gen_b16'][1] / fp32['gen_b16'][1]:.2f}, "
          f"batch 1 x{bf16['gen_b1'][1] / fp32['gen_b1'][1]:.2f}")


if __name__ == "__main__":
    main()
