"""Training under torchrun on the CPU: what one process through the launcher costs against a plain process, and
1 rank against 2 ranks for the same examples a step.

    python -m benchmarks.distributed

The embedded base (4-layer, 256-wide Llama) is quantized (NF4, double quantization) and 240 bundled rows prepared
(<= 96 tokens) once. Then, each a fresh process, as the qlora_adapter step starts them:
- `python -m ops.train` (one plain process, what training was before torchrun) and `python -m ops.train.launch`
  with nproc_per_node 1 (torchrun, one rank): the same STEPS steps of batch BATCH. The difference of their wall
  times is what the one code path costs a run.
- `python -m ops.train.launch` with 1 rank x BATCH and 2 ranks x BATCH/2 (the same examples a step, gloo). The
  training seconds are `train_summary.json`'s wall_seconds (inside train_adapter: load, train, save); the wall
  seconds include the processes' start.
Each of 2 ranks gets half the 1 rank's OMP_NUM_THREADS threads (at least 1); figures from a machine shared with other work vary by tens of percent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS, BATCH, MAX_SEQ_LEN = 12, 16, 96
TRAIN = {"max_steps": STEPS, "save_steps": 10_000, "logging_steps": 4, "seed": 0, "r": 16, "alpha": 32,
         "dropout": 0.0, "learning_rate": 1e-3, "lr_scheduler": "cosine", "max_grad_norm": 1.0}


def prepare(folder: Path) -> tuple[Path, Path]:
    """The embedded base quantized to NF4 and the bundled data prepared: (model dir, dataset dir)."""
    from ops.data.preparation import prepare_dataset
    from ops.data.spec import DataSpec
    from ops.model.base_resolution import resolve_base
    from ops.model.device import resolve_device
    from ops.model.embedded import build_embedded_base
    from ops.model.loading import load_tokenizer
    from ops.model.quantize import quantize_base
    from ops.model.spec import QuantSpec

    base = build_embedded_base(folder / "base")
    quantize_base(resolve_base(str(base)), QuantSpec(), resolve_device(), folder / "quantized", log=lambda _: None)
    model_dir = folder / "quantized" / "model"
    prepare_dataset(DataSpec(max_rows=240, max_seq_len=MAX_SEQ_LEN), load_tokenizer(model_dir), folder / "data",
                    log=lambda _: None)
    return model_dir, folder / "data"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of `cmd` run from the repository root (fails loudly)."""
    from ops.core.paths import REPO_ROOT

    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - started


def launched(folder: Path, model_dir: Path, data_dir: Path, nproc: int, batch: int, env: dict) -> dict:
    """One `python -m ops.train.launch` run: wall seconds, and the summary's training seconds and tokens/s."""
    from ops.train.launch import TrainJob, launch_command
    from ops.train.launch_spec import LaunchSpec

    job = TrainJob(model_dir=str(model_dir), dataset_dir=str(data_dir), out_dir=str(folder / "out"),
                   checkpoint_dir=str(folder / "ckpt"), spec={**TRAIN, "batch_size": batch},
                   launch=LaunchSpec(nproc_per_node=nproc), rdzv_id="bench")
    wall = timed(launch_command(job.write(folder / "launch.json")), env)
    summary = json.loads((folder / "out" / "train_summary.json").read_text())
    return {"wall_seconds": wall, "train_seconds": summary["wall_seconds"],
            "tokens_per_second": summary["tokens_per_second"], "final_loss": summary["final_loss"]}


def run() -> dict:
    import yaml

    from benchmarks._plots import bars

    folder = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)),
           "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    model_dir, data_dir = prepare(folder)
    (folder / "plain.yaml").write_text(yaml.safe_dump({**TRAIN, "batch_size": BATCH}))
    plain = timed([sys.executable, "-m", "ops.train", "--model-dir", str(model_dir), "--dataset-dir", str(data_dir),
                   "--out-dir", str(folder / "plain"), "--config", str(folder / "plain.yaml")], env)
    plain_train = json.loads((folder / "plain" / "train_summary.json").read_text())["wall_seconds"]
    one = launched(folder / "one", model_dir, data_dir, 1, BATCH, env)
    # the same cores in all: each of 2 ranks gets half the threads
    two = launched(folder / "two", model_dir, data_dir, 2, BATCH // 2,
                   {**env, "OMP_NUM_THREADS": str(max(1, int(env["OMP_NUM_THREADS"]) // 2))})
    overhead = (one["wall_seconds"] - one["train_seconds"]) - (plain - plain_train)
    table = [{"run": "python -m ops.train (plain process)", "wall_s": plain, "train_s": plain_train},
             {"run": f"torchrun 1 rank x {BATCH}", "wall_s": one["wall_seconds"], "train_s": one["train_seconds"],
              "tokens_per_s": one["tokens_per_second"], "final_loss": one["final_loss"]},
             {"run": f"torchrun 2 ranks x {BATCH // 2}", "wall_s": two["wall_seconds"], "train_s": two["train_seconds"],
              "tokens_per_s": two["tokens_per_second"], "final_loss": two["final_loss"]}]
    plot = bars("distributed_wall", [r["run"].split(" (")[0].replace("python -m ", "") for r in table],
                [r["wall_s"] for r in table], "wall seconds", f"{STEPS} QLoRA steps, {BATCH} examples a step")
    return {
        "name": "distributed", "title": "torchrun on the CPU: the launcher's cost, 1 rank vs 2 ranks",
        "goal": "report only (the one code path's cost per run; 2 ranks on a CPU are for testing DDP, not speed)",
        "met": None,
        "figures": {"torchrun_overhead_seconds": overhead, "plain_wall_seconds": plain,
                    "one_rank_wall_seconds": one["wall_seconds"], "two_rank_wall_seconds": two["wall_seconds"],
                    "one_rank_train_seconds": one["train_seconds"], "two_rank_train_seconds": two["train_seconds"],
                    "two_vs_one_train_speedup": one["train_seconds"] / two["train_seconds"]},
        "table": table,
        "notes": (f"torchrun_overhead_seconds: (launch wall - its training seconds) - (plain wall - its training "
                  f"seconds): the launcher process and torchrun's rendezvous and process group, beyond a plain "
                  f"process's start. {os.cpu_count()} CPUs, OMP_NUM_THREADS={env['OMP_NUM_THREADS']} for the plain "
                  "and 1-rank runs, half that (at least 1) per rank with 2 ranks."),
        "plots": [plot],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
