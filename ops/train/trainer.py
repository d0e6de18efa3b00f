"""QLoRA training: LoRA adapters on a frozen 4-bit base, paged AdamW, the transformers Trainer.

Runs inside the Dagster asset, or alone (also under `torchrun` for several processes):

    python -m ops.train --model-dir M --dataset-dir D --out-dir O [--config train.yaml]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from peft import LoraConfig, get_peft_model
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from ..data.tokens import MODEL_COLUMNS
from ..model.cpu_kernels import named_kernel_errors, restore_standard_layout
from ..model.device import DeviceInfo, ensure_fits, peak_memory_bytes, reset_peak_memory, resolve_device
from ..model.loading import load_quantized_model, load_tokenizer, prepare_for_training
from ..model.memory_estimate import estimate_for_checkpoint
from .callbacks import NonFiniteLossGuard, ProgressBarCallback, ProgressCallback
from .checkpoints import latest_checkpoint
from .distributed import RankInfo, rank_info, sum_across_ranks
from .loss_curve import LOSS_CURVE_FILE, plot_loss_curve
from .outcome import best_checkpoint_step, eval_history
from .packing import LENGTH_COLUMN, BatchTokens, batch_collator, check_packing_support
from .spec import TrainResult, TrainSpec


def build_lora_config(spec: TrainSpec) -> LoraConfig:
    targets = "all-linear" if spec.target_modules == ["all-linear"] else spec.target_modules
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")


def build_training_args(spec: TrainSpec, device: DeviceInfo, checkpoint_dir: Path,
                        ranks: RankInfo | None = None) -> TrainingArguments:
    """transformers 5 TrainingArguments from the spec: length in steps or epochs, evaluation, best checkpoint, NEFTune.

    Raises:
        ValueError: from transformers, for combinations the spec's own checks let through.
    """
    evaluating = spec.eval_steps is not None
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        max_steps=spec.max_steps if spec.max_steps is not None else -1,  # -1: num_train_epochs decides
        num_train_epochs=spec.num_epochs if spec.num_epochs is not None else 1.0,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.learning_rate,
        warmup_steps=spec.warmup(),  # transformers 5 merged warmup_ratio into warmup_steps: a float < 1 is a ratio
        lr_scheduler_type=spec.lr_scheduler,
        max_grad_norm=spec.max_grad_norm,
        weight_decay=spec.weight_decay,
        optim=spec.optim,
        logging_steps=spec.logging_steps,
        save_steps=spec.save_steps,
        save_total_limit=2,  # the newest checkpoint plus one in case the newest was cut off mid-write (the best is kept too)
        eval_strategy="steps" if evaluating else "no",
        eval_steps=spec.eval_steps,
        eval_on_start=spec.eval_on_start,
        prediction_loss_only=True,  # only the loss is used; keeping logits would hold eval rows x vocab floats
        metric_for_best_model="eval_loss" if evaluating else None,  # tracked for early stopping even without keep_best
        greater_is_better=False if evaluating else None,
        load_best_model_at_end=evaluating and spec.keep_best,
        neftune_noise_alpha=spec.neftune_noise_alpha,
        # the early-stopping count survives a resume (transformers' default restarts it at 0, so a crash adds patience)
        restore_callback_states_from_checkpoint=True,
        seed=spec.seed,
        # transformers 5 ignores the old `group_by_length` argument silently; this is its name now
        train_sampling_strategy="group_by_length" if spec.group_by_length else "random",
        length_column_name=LENGTH_COLUMN,
        use_cpu=device.type == "cpu",
        # bf16 autocast, on the CPU too: prepare_model_for_kbit_training upcasts the unquantized parameters to
        # fp32, so without autocast a "bf16" 4-bit model silently trains in fp32 (transformers 5 accepts bf16
        # with use_cpu; accelerate runs torch.autocast("cpu", torch.bfloat16)).
        bf16=device.compute_dtype == torch.bfloat16,
        fp16=device.type == "cuda" and device.compute_dtype == torch.float16,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,  # progress goes to the run log through ProgressCallback instead
        logging_nan_inf_filter=False,  # the default hides NaN losses from the logs, so nothing would stop on them
        report_to=[],
        # under torchrun: DDP over the LoRA parameters (gloo on CPU, NCCL on CUDA). Every trainable parameter gets a
        # gradient each step, and DDP's search for unused ones breaks gradient checkpointing.
        ddp_backend=("nccl" if device.type == "cuda" else "gloo") if (ranks or rank_info()).world_size > 1 else None,
        ddp_find_unused_parameters=False,
    )


class StandardLayoutCallback(TrainerCallback):
    """Before each step, undo any repacking an eval pass (evaluation, sample generation) did to the 4-bit layers.

    On CPUs with AVX512-BF16 a repacked layer would send the training forward through bitsandbytes' inference
    kernel; a no-op elsewhere, and cheap (one pass over the modules).
    """

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            restore_standard_layout(model)


def describe_optimizer(optimizer, requested: str, device: DeviceInfo) -> str:
    """Say which optimizer behaviour really ran: bitsandbytes pages optimizer state on CUDA only."""
    inner = getattr(optimizer, "optimizer", optimizer)
    name = f"{type(inner).__module__.split('.')[0]}.{type(inner).__name__}"
    if getattr(inner, "is_paged", False):
        if device.type == "cuda":
            return f"{requested}: {name} with paged optimizer state (unified memory, pages to CPU under pressure)"
        return f"{requested}: {name}, paging unsupported on CPU, fell back to non-paged optimizer state"
    return f"{requested}: {name} (not paged)"


def train_adapter(
    model_dir: Path,
    dataset_dir: Path,
    out_dir: Path,
    spec: TrainSpec,
    device: DeviceInfo,
    checkpoint_dir: Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    log: Callable[[str], None] = print,
    ranks: RankInfo | None = None,
) -> TrainResult:
    """Train LoRA adapters on the 4-bit base in `model_dir`; save them to `out_dir/adapter`.

    Args:
        model_dir: a quantized_base_model artifact's `model/` folder.
        dataset_dir: a training_dataset artifact folder.
        out_dir: where `adapter/`, `train_summary.json` and `loss_curve.png` go.
        spec: LoRA and training settings.
        device: where to train, and in which compute dtype.
        checkpoint_dir: resumable checkpoints (default `out_dir/checkpoints`); training resumes from the latest.
        callbacks: extra transformers callbacks (the MLflow loss logger).
        log: progress lines (give rank 0 alone a real one under torchrun).
        ranks: this process's place under torchrun (default: read from its environment; one process without it).
            Every rank trains on its share of each step's batches (accelerate deals them out in turn); rank 0 alone
            writes `out_dir`, and checkpoints are the Trainer's (rank 0 saves the weights).
    Returns:
        counts, steps (and epochs), losses in nats, the eval-loss history and best step when `spec.eval_steps` is
        set, whether early stopping ended the run, tokens per second, peak memory in bytes, wall seconds.
    Raises:
        NonFiniteLossError: the loss became NaN or infinite.
        PackedKernelError: a 4-bit kernel failure, named with the layer and the CPU.
    """
    from ..data.preparation import load_prepared

    started, ranks = time.time(), ranks or rank_info()
    reset_peak_memory(device.type)
    checkpoint_dir = Path(checkpoint_dir or Path(out_dir) / "checkpoints")
    splits = load_prepared(Path(dataset_dir))
    data = splits["train"].select_columns(list(MODEL_COLUMNS))
    held_out = splits["eval"].select_columns(list(MODEL_COLUMNS)) if spec.eval_steps is not None else None
    if spec.group_by_length:  # precomputed, or LengthGroupedSampler reads every row to measure it
        # in memory: a cache file would be written into the dataset artifact's folder
        data = data.map(lambda row: {LENGTH_COLUMN: len(row["input_ids"])}, keep_in_memory=True)
    tokenizer = load_tokenizer(model_dir)
    estimate = estimate_for_checkpoint(model_dir, spec.batch_size, max(map(len, data["input_ids"])), spec.r,
                                       device.dtype_name, spec.gradient_checkpointing, spec.dropout > 0, device.type)
    log(estimate.describe())
    ensure_fits(estimate.total, device)  # on a GPU, fails here, before loading, when the estimate exceeds free memory
    model = load_quantized_model(model_dir, device, log)
    if spec.packing:
        check_packing_support(model, device)
    model = prepare_for_training(model, spec.gradient_checkpointing)
    torch.manual_seed(spec.seed)
    model = get_peft_model(model, build_lora_config(spec))
    trainable, total = model.get_nb_trainable_parameters()
    log(f"LoRA r={spec.r} alpha={spec.alpha} on {spec.target_modules}: {trainable:,} trainable of {total:,} "
        f"parameters ({100 * trainable / total:.2f}%); {len(data)} training rows; device {device.type}"
        + (f"; {ranks.world_size} processes, {spec.batch_size * spec.grad_accum * ranks.world_size} examples a step"
           if ranks.world_size > 1 else ""))

    counter = BatchTokens()
    progress = ProgressCallback(log, counter, ranks.world_size)
    bar = ProgressBarCallback(progress)  # on a terminal only (ops.core.progress)
    stopper = [] if spec.early_stopping_patience is None else [EarlyStoppingCallback(spec.early_stopping_patience)]
    trainer = Trainer(
        model=model, args=build_training_args(spec, device, checkpoint_dir, ranks), train_dataset=data, eval_dataset=held_out,
        # the eval loop shares the collator: only batches drawn while training count in tokens/s and padding share
        data_collator=batch_collator(tokenizer.pad_token_id, counter, spec.packing, counting=lambda: model.training),
        callbacks=[progress, bar, NonFiniteLossGuard(), StandardLayoutCallback(), *stopper, *callbacks],
    )
    # With tqdm off the Trainer prints every log dict to stdout; ProgressCallback already logs each step's line.
    trainer.remove_callback(PrinterCallback)
    bar.watch(trainer)
    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        log(f"resuming from {resume.name} (step {resume.name.rsplit('-', 1)[-1]} of {spec.length()})")
    with named_kernel_errors("train", model):
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    # with keep_best the Trainer has loaded the best checkpoint's adapter weights back into the model by now
    adapter_dir = Path(out_dir) / "adapter"
    if ranks.is_main:
        model.save_pretrained(adapter_dir)
    # the summary counts every rank's batches (the progress lines estimate them from rank 0's)
    tokens, slots, since_start = sum_across_ranks(counter.tokens, counter.slots, counter.tokens - progress.tokens_at_start)
    state = trainer.state
    evals = eval_history(state.log_history)
    best_step = best_checkpoint_step(state) if spec.keep_best else None
    if evals:
        held = (f"the adapter holds step {best_step}'s weights" if best_step is not None else
                "the adapter holds the last step's weights" + ("; no checkpoint beat the loss before training"
                                                               if spec.keep_best else ""))
        log(f"eval_loss {evals[-1][1]:.4f} at step {evals[-1][0]}; best {min(l for _, l in evals):.4f}; {held}")
    summary = TrainResult(
        trainable_params=trainable,
        total_params=total,
        trainable_share=trainable / total,
        steps=state.global_step,
        max_steps=state.max_steps,
        epochs=float(state.epoch or 0.0),
        resumed_from_step=int(resume.name.rsplit("-", 1)[-1]) if resume else 0,
        final_loss=progress.history[-1][1] if progress.history else float(result.training_loss),
        mean_train_loss=float(result.training_loss),
        loss_history=progress.history,
        eval_history=evals,
        best_step=best_step,
        best_eval_loss=min((l for _, l in evals), default=None),
        stopped_early=bool(stopper) and state.global_step < state.max_steps,
        tokens_per_second=since_start / progress.train_seconds(),
        train_tokens=tokens,
        peak_memory_bytes=peak_memory_bytes(device.type),
        estimated_peak_memory_bytes=estimate.total,
        optimizer=describe_optimizer(trainer.optimizer, spec.optim, device),
        device=device.type,
        compute_dtype=device.dtype_name,
        compute_dtype_reason=device.dtype_reason,
        wall_seconds=time.time() - started,
        padding_share=1 - tokens / slots if slots else 0.0,
        world_size=ranks.world_size,
    )
    if not ranks.is_main:
        return summary
    tokenizer.save_pretrained(adapter_dir)
    (Path(out_dir) / "train_summary.json").write_text(summary.model_dump_json(indent=2))
    if summary.loss_history or summary.eval_history:  # the picture beside the adapter: the UI and MLflow show it
        plot_loss_curve(summary.loss_history, Path(out_dir) / LOSS_CURVE_FILE, summary.eval_history,
                        title=f"QLoRA r={spec.r}, {summary.steps} steps", best_step=summary.best_step)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.train",
                                     description="Train QLoRA adapters on a saved 4-bit base model.")
    parser.add_argument("--model-dir", type=Path, required=True, help="a quantized_base_model artifact's model/ folder")
    parser.add_argument("--dataset-dir", type=Path, required=True, help="a training_dataset artifact folder")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="YAML or JSON with TrainSpec fields")
    parser.add_argument("--require-gpu", action="store_true")
    args = parser.parse_args(argv)
    fields = {}
    if args.config:
        import yaml

        fields = yaml.safe_load(args.config.read_text()) or {}
    summary = train_adapter(args.model_dir, args.dataset_dir, args.out_dir, TrainSpec(**fields),
                            resolve_device(args.require_gpu))
    print(summary.model_dump_json(indent=2, exclude={"loss_history"}))

