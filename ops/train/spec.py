"""Settings and result of qlora_adapter: the LoRA adapter and the training run (pydantic, a help text per field).

Defaults follow the QLoRA paper (Dettmers et al., 2023, arXiv:2305.14314, section 4 and appendix B.2, and its
reference script qlora.py) for real 7B-65B models; the values tuned for the tiny random demo model live in
configs/demo.yaml only.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator, model_validator

from ..core.store import StepSummary
from ..core.validation import non_negative, positive


class LoraSpec(BaseModel):
    # QLoRA paper: r=64, alpha=16 for every model size (rank mattered little once all linear layers are adapted).
    r: int = Field(64, description="LoRA rank (QLoRA paper: 64).")
    alpha: int = Field(16, description="LoRA scaling numerator, scale = alpha / r (QLoRA paper: 16).")
    # QLoRA paper: 0.1 up to 13B, 0.05 for 33B and 65B; set 0.05 in a recipe for those sizes.
    dropout: float = Field(0.1, description="Dropout on the LoRA input (QLoRA paper: 0.1 up to 13B, 0.05 for 33B/65B).")
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
    max_steps: Optional[int] = Field(
        None, description="Optimizer steps to train. Set this or num_epochs, not both.")
    num_epochs: Optional[float] = Field(
        None, description="Passes over the training split (fractions allowed); the steps follow from the rows, "
        "batch_size and grad_accum. Set this or max_steps, not both.")
    batch_size: int = Field(16, description="Examples per device per step (QLoRA paper: 16 for 7B/13B).")
    grad_accum: int = Field(1, description="Gradient accumulation steps.")
    # QLoRA paper: 2e-4 for 7B/13B, 1e-4 for 33B/65B.
    learning_rate: float = Field(2e-4, description="Peak learning rate (QLoRA paper: 2e-4 up to 13B, 1e-4 above).")
    # 0: the paper's constant schedule (its qlora.py passes warmup_ratio 0.03, which transformers' 'constant' ignores).
    warmup_steps: int = Field(0, description="Linear warm-up steps. Set this or warmup_ratio, not both.")
    warmup_ratio: Optional[float] = Field(
        None, description="Linear warm-up as a share of all training steps, in [0, 1). Set this or warmup_steps.")
    # constant: the QLoRA paper's schedule (it found no gain from decaying schedules at its step counts).
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "linear"] = Field(
        "constant", description="Learning-rate schedule; 'constant' has no warm-up, use constant_with_warmup for one.")
    # 0.3: the QLoRA paper's clipping norm, for every model size.
    max_grad_norm: float = Field(0.3, description="Gradient clipping norm (QLoRA paper: 0.3).")
    weight_decay: float = Field(0.0, description="AdamW weight decay (QLoRA paper: 0).")
    optim: str = Field(
        "paged_adamw_32bit",
        description="transformers optimizer name; paged_* optimizers page their state to CPU under memory pressure (CUDA only).",
    )
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward to save memory.")
    save_steps: int = Field(100, description="Save a resumable checkpoint every N steps.")
    logging_steps: int = Field(10, description="Log loss every N steps.")
    eval_steps: Optional[int] = Field(
        None, description="Compute the loss on the held-out split every N steps (to MLflow and the run log); "
        "None: no evaluation during training.")
    eval_on_start: bool = Field(False, description="Also evaluate before the first step (the base's loss, for the curve).")
    keep_best: bool = Field(
        True, description="With eval_steps: save the checkpoint with the lowest eval loss as the adapter, not the last "
        "(needs save_steps equal to eval_steps). Note it is chosen on the split adapter_evaluation reports on.")
    early_stopping_patience: Optional[int] = Field(
        None, description="With eval_steps: stop after this many evaluations in a row without a lower eval loss.")
    neftune_noise_alpha: Optional[float] = Field(
        None, description="NEFTune: uniform noise of scale alpha / sqrt(tokens x hidden) on the input embeddings while "
        "training (the NEFTune paper tried 5-15); None: off. Evaluation and generation see no noise.")
    seed: int = Field(0, description="Seed of LoRA init, dropout and data order.")
    packing: bool = Field(
        False,
        description="Pack each batch's examples into shared rows (position ids restart per example, attention never "
                    "crosses examples): the same examples and loss per step with little padding. Needs eager or sdpa "
                    "attention (flash_attention_2 on CUDA); refused, with the reason, where the model's attention "
                    "does not keep examples apart.",
    )
    group_by_length: bool = Field(
        False,
        description="Draw batches of similar length (transformers' LengthGroupedSampler) to cut padding; changes "
                    "which examples share a step, randomly still.",
    )

    @field_validator("max_steps", "num_epochs", "batch_size", "grad_accum", "learning_rate", "save_steps",
                     "logging_steps", "max_grad_norm", "eval_steps", "early_stopping_patience", "neftune_noise_alpha")
    @classmethod
    def _pos(cls, v, info):
        return v if v is None else positive(info.field_name, v)

    @field_validator("warmup_steps", "weight_decay")
    @classmethod
    def _non_negative(cls, v, info):
        return non_negative(info.field_name, v)

    @field_validator("warmup_ratio")
    @classmethod
    def _ratio(cls, v):
        if v is not None and not 0 <= v < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_steps is None and self.num_epochs is None:
            raise ValueError("set max_steps or num_epochs: neither is set, and exactly one decides how long training runs")
        if self.max_steps is not None and self.num_epochs is not None:
            raise ValueError(f"set max_steps or num_epochs, not both: got max_steps={self.max_steps} "
                             f"and num_epochs={self.num_epochs}")
        if self.warmup_steps and self.warmup_ratio is not None:
            raise ValueError(f"set warmup_steps or warmup_ratio, not both: got warmup_steps={self.warmup_steps} "
                             f"and warmup_ratio={self.warmup_ratio}")
        if self.lr_scheduler == "constant" and (self.warmup_steps or self.warmup_ratio):
            raise ValueError("lr_scheduler 'constant' has no warm-up, so the warm-up set would be ignored; "
                             "use lr_scheduler: constant_with_warmup")
        if self.eval_steps is None and (self.early_stopping_patience is not None or self.eval_on_start):
            raise ValueError("early_stopping_patience and eval_on_start need eval_steps (evaluation during training)")
        if self.eval_steps is not None and self.keep_best and self.save_steps != self.eval_steps:
            raise ValueError(f"keep_best needs a checkpoint at every evaluation: save_steps ({self.save_steps}) must "
                             f"equal eval_steps ({self.eval_steps}), or set keep_best: false")
        return self

    def warmup(self) -> float:
        """The warm-up as transformers 5 takes it: whole steps (>= 1), or a ratio of all steps in [0, 1)."""
        return self.warmup_ratio if self.warmup_ratio is not None else self.warmup_steps

    def length(self) -> str:
        """How long training runs, in words: '600 steps' or '2 epochs'."""
        return f"{self.max_steps} steps" if self.max_steps is not None else f"{self.num_epochs:g} epochs"


class TrainResult(StepSummary):
    """What `train_adapter` did: parameter counts, steps, losses (nats per target token), speed, memory."""

    trainable_params: int
    total_params: int
    trainable_share: float  # trainable / total
    steps: int  # optimizer steps done, resumed ones included
    max_steps: int = 0  # steps planned: max_steps, or what num_epochs came to
    epochs: float = 0.0  # passes over the training split done (fractional)
    resumed_from_step: int  # 0: a fresh start
    final_loss: float  # nats, the last logged training loss
    mean_train_loss: float  # nats, over this process's steps
    loss_history: list[tuple[int, float]]  # (step, loss in nats) at each logging step
    eval_history: list[tuple[int, float]] = []  # (step, held-out loss in nats) at each evaluation, resumed ones included
    best_step: Optional[int] = None  # the step whose weights the adapter holds, when keep_best chose it
    best_eval_loss: Optional[float] = None  # nats, the lowest eval loss seen
    stopped_early: bool = False  # early stopping ended training before the planned steps
    tokens_per_second: float  # real (non-padding) tokens per wall second since training began
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
    padding_share: float = 0.0  # padding positions / all positions in the collated batches (0 to 1)
    world_size: int = 1  # training processes (torchrun ranks) on all machines
