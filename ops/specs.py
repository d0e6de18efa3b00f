"""Validated settings for each step, as pydantic models with a help text per field.

The Dagster config classes in `assets/` inherit from these, so a bad value (r=0, a negative learning rate,
an unknown quant type) fails before any work with a message naming the field and the value, and the same
checks apply when an op is called directly from Python or a launcher.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator, model_validator

DataFormat = Literal["auto", "alpaca", "chat", "prompt_completion", "text"]


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


class DataSpec(BaseModel):
    source: str = Field(
        "bundled",
        description="Where the examples come from: 'bundled' (the shipped demo set), a local file "
        "(.jsonl, .json, .csv, .parquet) or a `datasets` hub id.",
    )
    format: DataFormat = Field("auto", description="alpaca, chat, prompt_completion, text, or auto to detect.")
    hub_split: str = Field("train", description="Split to load when `source` is a hub id.")
    hub_revision: Optional[str] = Field(None, description="Git revision of a hub dataset, for reproducibility.")
    max_seq_len: int = Field(256, description="Tokens per example; longer examples are truncated and counted.")
    train_on_prompt: bool = Field(False, description="Also train on prompt tokens (by default only the response is).")
    eval_fraction: float = Field(0.1, description="Share of rows held out for evaluation.")
    max_rows: Optional[int] = Field(None, description="Use at most this many rows (after deduplication).")
    seed: int = Field(42, description="Seed of the train/eval split.")

    @field_validator("max_seq_len")
    @classmethod
    def _max_seq_len(cls, v: int) -> int:
        if v < 8:
            raise ValueError(f"max_seq_len must be >= 8, got {v}")
        return v

    @field_validator("eval_fraction")
    @classmethod
    def _eval_fraction(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"eval_fraction must be between 0 and 1 (exclusive), got {v}")
        return v

    @field_validator("max_rows")
    @classmethod
    def _max_rows(cls, v: Optional[int]) -> Optional[int]:
        return v if v is None else int(_positive("max_rows", v))


class QuantSpec(BaseModel):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is QLoRA's NormalFloat.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (~0.37 bits/weight saved).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Dtype of the matmuls. auto: bf16 on a CUDA GPU that supports it (else fp16); on a CPU, bf16 "
        "where it has AVX512-BF16 or AMX, fp32 elsewhere (emulated bf16 trained ~10-20x slower on AVX2).",
    )


class LoraSpec(BaseModel):
    r: int = Field(16, description="LoRA rank.")
    alpha: int = Field(32, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="Modules to adapt; ['all-linear'] adapts every linear layer but the output head, as QLoRA does.",
    )

    @field_validator("r", "alpha")
    @classmethod
    def _rank(cls, v: int, info) -> int:
        return int(_positive(info.field_name, v))

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"dropout must be in [0, 1), got {v}")
        return v

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("target_modules must name at least one module, got []")
        return v


class TrainSpec(LoraSpec):
    max_steps: int = Field(600, description="Optimizer steps to train.")
    batch_size: int = Field(16, description="Examples per device per step.")
    grad_accum: int = Field(1, description="Gradient accumulation steps.")
    learning_rate: float = Field(1e-3, description="Peak learning rate.")
    warmup_steps: int = Field(30, description="Linear warm-up steps before the decay.")
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = Field("cosine", description="Decay schedule.")
    max_grad_norm: float = Field(1.0, description="Gradient clipping norm (keeps occasional spikes in check).")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    optim: str = Field(
        "paged_adamw_32bit",
        description="transformers optimizer name; paged_* optimizers page their state to CPU under memory pressure (CUDA only).",
    )
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward to save memory.")
    save_steps: int = Field(100, description="Save a resumable checkpoint every N steps.")
    logging_steps: int = Field(10, description="Log loss every N steps.")
    seed: int = Field(0, description="Seed of LoRA init, dropout and data order.")

    @field_validator("max_steps", "batch_size", "grad_accum", "learning_rate", "save_steps", "logging_steps", "max_grad_norm")
    @classmethod
    def _pos(cls, v, info):
        return _positive(info.field_name, v)

    @field_validator("warmup_steps", "weight_decay")
    @classmethod
    def _non_negative(cls, v, info):
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0, got {v}")
        return v


class EvalSpec(BaseModel):
    max_new_tokens: int = Field(32, description="Tokens to generate per held-out prompt.")
    num_generation_examples: int = Field(64, description="Held-out rows scored with generation metrics.")
    num_samples_shown: int = Field(5, description="Sample generations shown in the metadata.")
    batch_size: int = Field(16, description="Batch size for loss and generation.")

    @field_validator("max_new_tokens", "num_generation_examples", "batch_size")
    @classmethod
    def _pos(cls, v, info):
        return int(_positive(info.field_name, v))


# The tuned model's evaluation metrics (ops.evaluation.METRICS), which the champion gate can compare.
GATE_METRICS = ("tuned.eval_loss", "tuned.perplexity", "tuned.exact_match", "tuned.rouge_l")


class RegistrySpec(BaseModel):
    model_name: str = Field("qlora-adapter", description="Registered model name in the MLflow registry.")
    alias: str = Field("candidate", description="Alias moved to the new version (the README lists the aliases).")
    primary_metric: str = Field(
        "tuned.eval_loss",
        description="Evaluation metric the champion gate compares, e.g. tuned.eval_loss (lower is better) or "
        "tuned.exact_match (higher is better); names ending in loss/perplexity count as lower-is-better.",
    )
    min_improvement: float = Field(0.0, description="Margin by which a new version must beat the champion to replace it.")
    log_base: bool = Field(
        True,
        description="Copy the 4-bit base into the logged model (self-contained). Off: a hub base is recorded by id "
        "and revision and quantized again on load; local and embedded bases are always copied.",
    )

    @model_validator(mode="after")
    def _names(self):
        if not self.model_name.strip():
            raise ValueError("model_name must not be empty")
        if not self.alias.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"alias must be letters, digits, '-' or '_', got {self.alias!r}")
        if self.primary_metric not in GATE_METRICS:
            raise ValueError(f"primary_metric must be one of {', '.join(GATE_METRICS)}, got {self.primary_metric!r}")
        if self.min_improvement < 0:
            raise ValueError(f"min_improvement must be >= 0, got {self.min_improvement}")
        if self.alias in ("champion", "challenger"):  # the champion gate owns these two
            raise ValueError(f"alias {self.alias!r} is set by the champion gate; use another alias (e.g. candidate)")
        return self
