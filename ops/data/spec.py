"""Settings and result of training_dataset (pydantic, a help text per field); assets/dataset.py's config inherits them."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator

from ..core.store import StepSummary
from ..core.validation import positive

DataFormat = Literal["auto", "alpaca", "chat", "prompt_completion", "text"]


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
    train_on_turns: Literal["all", "last"] = Field(
        "all",
        description="Chat data: train on every assistant turn of a conversation ('all') or on its last reply only "
        "('last'); system, user and tool turns are never targets. Use 'last' for chat templates that rewrite "
        "earlier turns (e.g. drop earlier reasoning), which 'all' refuses.",
    )
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
        return v if v is None else int(positive("max_rows", v))


class DatasetSummary(StepSummary):
    """What `prepare_dataset` made: counts in rows and tokens, the detected format, a preview."""

    format: str  # alpaca, chat, prompt_completion or text
    rows_loaded: int
    duplicates_dropped: int  # exact (prompt, completion) duplicates
    ignored_columns: list[str]
    near_duplicate_prompts_across_split: int  # held-out prompts also in train up to case and whitespace
    rows: int  # examples kept (train + eval)
    train_rows: int
    eval_rows: int
    tokens: int  # input tokens of the kept examples
    target_tokens: int  # tokens the loss is computed on
    truncated_rows: int  # examples cut at max_seq_len, counted before rows with no target left drop
    dropped_no_target: int
    max_seq_len: int  # tokens
    system_message: Optional[str]  # the one system message every chat row had: serving's default
    preview: list[dict[str, str]]  # the first rows' prompt and completion, clipped

    @property
    def rows_tokenized(self) -> int:
        """Examples that were tokenized: those kept and those dropped with no target left."""
        return self.rows + self.dropped_no_target
