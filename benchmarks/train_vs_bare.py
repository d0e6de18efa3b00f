"""Training tokens/s through the `qlora_adapter` Dagster asset against a bare peft + bitsandbytes + Trainer script.

    python -m benchmarks.train_vs_bare

The embedded base (4-layer, 256-wide Llama) is quantized and the bundled data prepared once by the pipeline's own
assets (demo settings: NF4 + double quantization, sequences <= 96 tokens). Then the `qlora_adapter` asset (through
`dg.materialize`, forced, with its MLflow logging) and benchmarks/bare_qlora.py (no project imports) train on the
same 4-bit model directory and the same train split with the same batch, steps, LoRA and optimizer settings,
interleaved in alternating order, REPEATS times each, in this one process. Tokens/s is real (unpadded) tokens from
the start of training to the saved adapter in both. The figure is the median of the paired ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

STEPS = 20  # optimizer steps per timed run: a few seconds each on a quiet 2-core machine
WARMUP_STEPS = 4  # one short untimed run of each first: lazy imports, allocator and kernel warm-up
BATCH, MAX_SEQ_LEN = 16, 96  # the demo's batch and sequence length (configs/demo.yaml)
REPEATS = 3
TRAIN = {"batch_size": BATCH, "save_steps": 10_000, "logging_steps": 10, "warmup_steps": 30,
         "learning_rate": 1e-3, "lr_scheduler": "cosine", "seed": 0, "r": 16, "alpha": 32, "dropout": 0.05,
         "max_grad_norm": 1.0}  # bare_qlora.train's defaults, spelled out


def _materialize(run_config: dict, selection: list[str]):
    """Materialize `selection` of the pipeline's assets (defaults: embedded base, MLflow under QLORA_HOME)."""
    import dagster as dg

    from assets import PIPELINE_ASSETS
    from pipelines.definitions import RESOURCES

    result = dg.materialize(PIPELINE_ASSETS, resources=RESOURCES, run_config=run_config,
                            selection=[dg.AssetKey(s) for s in selection], raise_on_error=True)
    return {e.step_materialization_data.materialization.asset_key.to_user_string():
            {k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


def asset_run(steps: int) -> dict:
    """One forced materialization of qlora_adapter; its own tokens/s figure, final loss and the wall seconds."""
    started = time.perf_counter()
    meta = _materialize({"ops": {"qlora_adapter": {"config": {**TRAIN, "max_steps": steps, "force": True}}}},
                        ["qlora_adapter"])["qlora_adapter"]
    return {"tokens_per_second": meta["tokens_per_second"], "final_loss": meta["final_loss"],
            "wall_seconds": time.perf_counter() - started}


def run() -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["QLORA_HOME"] = str(home)  # a private data home: artifacts, the MLflow registry
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import datasets
    from transformers.utils import logging as hf_logging

    from benchmarks._plots import bars
    from benchmarks.bare_qlora import train as bare_train
    from ops.model.device import resolve_device

    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    _materialize({"ops": {"training_dataset": {"config": {"max_seq_len": MAX_SEQ_LEN}}}},
                 ["training_dataset", "quantized_base_model"])
    artifacts = home / "artifacts"
    model_dir = next((artifacts / "quantized_base_model").glob("[0-9a-f]*/model"))
    dataset_dir = next(p for p in (artifacts / "training_dataset").glob("[0-9a-f]*") if (p / "dataset").is_dir())
    dtype = resolve_device().dtype_name

    def bare(steps: int) -> dict:
        out = Path(tempfile.mkdtemp(dir=home, prefix="bare-"))
        return bare_train(str(model_dir), str(dataset_dir), str(out), steps=steps, batch_size=BATCH, compute_dtype=dtype)

    asset_run(WARMUP_STEPS), bare(WARMUP_STEPS)
    table = []
    for rep in range(REPEATS):
        order = ("asset", "bare") if rep % 2 == 0 else ("bare", "asset")
        got = {name: (asset_run if name == "asset" else bare)(STEPS) for name in order}
        table.append({"repeat": rep + 1, "order": " then ".join(order),
                      "asset tokens/s": got["asset"]["tokens_per_second"], "bare tokens/s": got["bare"]["tokens_per_second"],
                      "ratio": got["asset"]["tokens_per_second"] / got["bare"]["tokens_per_second"],
                      "asset final loss": got["asset"]["final_loss"], "bare final loss": got["bare"]["final_loss"],
                      "asset wall s": got["asset"]["wall_seconds"], "bare wall s": got["bare"]["wall_seconds"]})
    ratio = statistics.median(r["ratio"] for r in table)
    asset_tps = statistics.median(r["asset tokens/s"] for r in table)
    bare_tps = statistics.median(r["bare tokens/s"] for r in table)
    plot = bars("train_vs_bare", ["qlora_adapter asset", "bare script"], [asset_tps, bare_tps], "tokens / s",
                f"QLoRA training, {STEPS} steps x batch {BATCH}, median of {REPEATS}")
    return {
        "name": "train_vs_bare",
        "title": "Training tokens/s: the qlora_adapter asset against a bare peft + bitsandbytes + Trainer script",
        "goal": ">= 1.0x the bare script's tokens/s (median of paired ratios)",
        "met": ratio >= 1.0,
        "figures": {"median_ratio": ratio, "asset_tokens_per_s": asset_tps, "bare_tokens_per_s": bare_tps,
                    "min_ratio": min(r["ratio"] for r in table), "max_ratio": max(r["ratio"] for r in table),
                    "steps": STEPS, "repeats": REPEATS},
        "table": table,
        "notes": f"Embedded 4-layer 256-wide Llama in NF4 with double quantization, compute dtype {dtype}; bundled "
                 f"data at <= {MAX_SEQ_LEN} tokens; batch {BATCH}; {STEPS} steps; LoRA r=16 on all linear layers, "
                 "gradient checkpointing, paged_adamw_32bit (non-paged state on a CPU). Both sides in one process, "
                 "alternating which goes first, after one untimed warm-up run each. The asset's figure is its own "
                 "materialization metadata (TrainResult.tokens_per_second); the wall seconds add what the asset "
                 "does around training (Dagster run, fingerprints, MLflow run, artifact store) and the model load "
                 "that both do. Same seed and data order, so the final losses should agree closely; a gap would "
                 "mean the recipes differ.",
        "plots": [plot],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
