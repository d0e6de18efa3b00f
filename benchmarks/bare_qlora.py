"""A bare QLoRA training script: peft + bitsandbytes + the transformers Trainer, and nothing of this project.

    python benchmarks/bare_qlora.py --model-dir M --dataset-dir D --out-dir O [--steps 30] [--batch-size 16]

It is the baseline the `train_vs_bare` benchmark holds the `qlora_adapter` asset against: the recipe as the
libraries' own examples write it (4-bit model loaded from its saved quantization config, prepare_model_for_kbit_training
with non-reentrant gradient checkpointing, LoRA r=16 / alpha 32 / dropout 0.05 on all linear layers, paged AdamW
32-bit, cosine schedule, gradient clipping 1.0, right padding with labels -100) on the same prepared dataset
(`<dataset-dir>/dataset`, its train split). It prints one JSON line: tokens/s (real, unpadded tokens between the
start of training and the saved adapter, the same window the project's TrainResult measures), steps, final loss.
No module of this project is imported, on purpose.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets
import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments


class Clock(TrainerCallback):
    """Start time of training and the last logged loss."""

    def __init__(self) -> None:
        self.start = 0.0
        self.loss = float("nan")

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])


def train(model_dir: str, dataset_dir: str, out_dir: str, steps: int = 30, batch_size: int = 16,
          compute_dtype: str = "float32", seed: int = 0, learning_rate: float = 1e-3, warmup_steps: int = 30,
          logging_steps: int = 10) -> dict:
    """Train a LoRA adapter on the 4-bit model in `model_dir`; return tokens/s, steps, final loss, wall seconds.

    Args:
        model_dir: a saved 4-bit checkpoint (its BitsAndBytesConfig is in config.json) with its tokenizer.
        dataset_dir: a folder holding `dataset/` (a datasets DatasetDict with input_ids, attention_mask, labels).
        out_dir: checkpoints and the saved adapter.
        steps, batch_size, seed, learning_rate, warmup_steps, logging_steps: the Trainer's settings.
        compute_dtype: "float32" or "bfloat16" (bf16 turns on the Trainer's autocast).
    Returns:
        {"tokens_per_second": real tokens per second, "train_tokens", "steps", "final_loss" (nats), "wall_seconds"}
    """
    started = time.time()
    dtype = getattr(torch, compute_dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = datasets.load_from_disk(str(Path(dataset_dir) / "dataset"))["train"]
    data = data.select_columns(["input_ids", "attention_mask", "labels"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, device_map="cpu" if not torch.cuda.is_available() else {"": 0},
                                                 dtype=dtype)
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             bias="none", task_type="CAUSAL_LM"))
    tokens = 0

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        nonlocal tokens
        tokens += sum(len(r["input_ids"]) for r in rows)
        width = max(len(r["input_ids"]) for r in rows)
        pad = lambda seq, value: list(seq) + [value] * (width - len(seq))  # noqa: E731
        return {"input_ids": torch.tensor([pad(r["input_ids"], tokenizer.pad_token_id) for r in rows]),
                "attention_mask": torch.tensor([pad(r["attention_mask"], 0) for r in rows]),
                "labels": torch.tensor([pad(r["labels"], -100) for r in rows])}

    clock = Clock()
    args = TrainingArguments(
        output_dir=str(Path(out_dir) / "checkpoints"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, warmup_steps=warmup_steps, lr_scheduler_type="cosine", max_grad_norm=1.0,
        optim="paged_adamw_32bit", logging_steps=logging_steps, save_steps=10_000, seed=seed,
        use_cpu=not torch.cuda.is_available(), bf16=dtype == torch.bfloat16, remove_unused_columns=False,
        dataloader_num_workers=0, disable_tqdm=True, report_to=[],
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[clock])
    trainer.train()
    model.save_pretrained(Path(out_dir) / "adapter")
    elapsed = time.time() - clock.start
    return {"tokens_per_second": tokens / elapsed, "train_tokens": tokens, "steps": trainer.state.global_step,
            "final_loss": clock.loss, "wall_seconds": time.time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    print(json.dumps(train(args.model_dir, args.dataset_dir, args.out_dir, args.steps, args.batch_size,
                           args.compute_dtype)))


if __name__ == "__main__":
    main()
