"""Settings and result of qlora_adapter: the LoRA adapter and the training run (pydantic, a help text per field)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator

from ..core.store import StepSummary
from ..core.validation import non_negative, positive


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
        return int(positive(info.field_name, v))

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
        return positive(info.field_name, v)

    @field_validator("warmup_steps", "weight_decay")
    @classmethod
    def _non_negative(cls, v, info):
        return non_negative(info.field_name, v)


class TrainResult(StepSummary):
    """What `train_adapter` did: parameter counts, steps, losses (nats per target token), speed, memory."""

    trainable_params: int
    total_params: int
    trainable_share: float  # trainable / total
    steps: int  # optimizer steps done, resumed ones included
    resumed_from_step: int  # 0: a fresh start
    final_loss: float  # nats, the last logged training loss
    mean_train_loss: float  # nats, over this process's steps
    loss_history: list[tuple[int, float]]  # (step, loss in nats) at each logging step
    tokens_per_second: float
    train_tokens: int
    peak_memory_bytes: int
    estimated_peak_memory_bytes: Optional[int] = None  # ops.model.memory_estimate's prediction, before loading
    optimizer: str  # what actually ran (a paged optimizer falls back to non-paged state on a CPU)
    device: str
    compute_dtype: str
    compute_dtype_reason: Optional[str]
    wall_seconds: float
    mlflow_run_id: Optional[str] = None  # the run the per-step loss went to, when tracked
    tracking_uri: Optional[str] = None  # that run's server, credentials removed
