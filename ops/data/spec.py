"""Settings and result of training_dataset (pydantic, a help text per field); assets/dataset.py's config inherits them."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..core.store import StepSummary
from ..core.validation import positive

DataFormat = Literal["auto", "alpaca", "chat", "sharegpt", "prompt_completion", "text"]
# How far the shares of a mixture may sum from 1: room for 0.33 + 0.33 + 0.33, not for a forgotten source.
SHARE_SUM_TOLERANCE = 0.01
COLUMNS_HELP = ("Rename columns before the format is detected: source column -> the format's field, e.g. "
                "{question: instruction, answer: output}.")


class SourceSpec(BaseModel):
    """One source of a mixture: where its rows come from, how to read them, and how many of them to use."""

    model_config = ConfigDict(extra="forbid")  # a misspelled `shar:` must not silently mean "no share"

    source: str = Field(..., description="'bundled', a local file or folder (.jsonl, .json, .csv, .parquet) or a "
                        "`datasets` hub id.")
    format: DataFormat = Field("auto", description="alpaca, chat, sharegpt, prompt_completion, text, or auto to detect.")
    hub_split: str = Field("train", description="Split to load when `source` is a hub id.")
    hub_revision: Optional[str] = Field(None, description="Git revision of a hub dataset, for reproducibility.")
    columns: dict[str, str] = Field(default_factory=dict, description=COLUMNS_HELP)
    share: Optional[float] = Field(None, description="Fraction of the mixture's rows drawn from this source, in (0, 1]; "
                                   "give every source a share (summing to 1 within 0.01; they are normalized) or none.")
    max_rows: Optional[int] = Field(None, description="Draw at most this many rows from this source (seeded sample); "
                                    "instead of a share.")

    @field_validator("share")
    @classmethod
    def _share(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"share must be in (0, 1], got {v}")
        return v

    @field_validator("max_rows")
    @classmethod
    def _source_max_rows(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v is not None and info.data.get("share") is not None:
            raise ValueError(f"give a source a share or max_rows, not both (share={info.data['share']:g}, max_rows={v})")
        return v if v is None else int(positive("max_rows", v))


class DataSpec(BaseModel):
    source: str = Field(
        "bundled",
        description="Where the examples come from: 'bundled' (the shipped demo set), a local file "
        "(.jsonl, .json, .csv, .parquet) or a `datasets` hub id.",
    )
    format: DataFormat = Field("auto", description="alpaca, chat, sharegpt, prompt_completion, text, or auto to detect.")
    hub_split: str = Field("train", description="Split to load when `source` is a hub id.")
    hub_revision: Optional[str] = Field(None, description="Git revision of a hub dataset, for reproducibility.")
    columns: dict[str, str] = Field(default_factory=dict, description=COLUMNS_HELP)
    mixture: list[SourceSpec] = Field(
        default_factory=list,
        description="Several sources in one dataset, each with its own source, format, columns and share or max_rows; "
        "replaces `source` (leave source, format and columns unset). max_rows then caps the mixture's total.",
    )
    max_seq_len: int = Field(256, description="Tokens per example; longer examples are truncated and counted.")
    train_on_prompt: bool = Field(False, description="Also train on prompt tokens (by default only the response is).")
    train_on_turns: Literal["all", "last"] = Field(
        "all",
        description="Chat data: train on every assistant turn of a conversation ('all') or on its last reply only "
        "('last'); system, user and tool turns are never targets. Use 'last' for chat templates that rewrite "
        "earlier turns (e.g. drop earlier reasoning), which 'all' refuses.",
    )
    eval_fraction: float = Field(0.1, description="Share of rows held out for evaluation.")
    max_rows: Optional[int] = Field(None, description="Use at most this many rows (after deduplication; for a mixture, "
                                    "the total drawn from its sources).")
    seed: int = Field(42, description="Seed of the train/eval split and of a mixture's sampling.")

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

    @field_validator("mixture")
    @classmethod
    def _mixture(cls, v: list, info: ValidationInfo) -> list:
        """One of `source` and `mixture` decides; shares are all given (summing to 1) or none."""
        if not v:
            return v
        unset = {"source": "bundled", "format": "auto", "columns": {}}
        single = {k: info.data.get(k, unset[k]) for k in unset}  # a field that failed its own check is not in data
        if single != unset:
            set_ = ", ".join(f"{k}={val!r}" for k, val in single.items() if val not in ("bundled", "auto", {}))
            raise ValueError(f"give either source or mixture, not both: {set_} is set beside a mixture of {len(v)}; "
                             "move it into the mixture")
        shares = [s.share for s in v]
        if any(x is not None for x in shares):
            missing = [i for i, x in enumerate(shares, 1) if x is None]
            if missing:
                raise ValueError(f"give every mixture source a share or none: source {missing[0]} "
                                 f"({v[missing[0] - 1].source}) has none")
            if abs(sum(shares) - 1) > SHARE_SUM_TOLERANCE + 1e-9:  # 1e-9: 0.33 * 3 is 0.98999...
                raise ValueError(f"mixture shares must sum to 1, got {' + '.join(f'{x:g}' for x in shares)} = "
                                 f"{sum(shares):g}")
        return v

    def sources(self) -> list[SourceSpec]:
        """The mixture's sources, or the single `source` as a one-source list."""
        if self.mixture:
            return list(self.mixture)
        return [SourceSpec(source=self.source, format=self.format, hub_split=self.hub_split,
                           hub_revision=self.hub_revision, columns=self.columns)]


class SourceSummary(BaseModel):
    """One source's part of the prepared dataset, in rows and tokens."""

    source: str
    format: str  # the source's own format (sharegpt stays sharegpt here; it trains as chat)
    rows_loaded: int  # rows in the file or split
    rows_drawn: int  # rows the mixture drew from it (all of them for a single source)
    rows: int  # examples kept after deduplication and truncation
    share: float  # of the kept examples (0-1)
    tokens: int
    target_tokens: int


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
    sources: list[SourceSummary] = []  # per source, in the order given (one for a single source)

    @property
    def rows_tokenized(self) -> int:
        """Examples that were tokenized: those kept and those dropped with no target left."""
        return self.rows + self.dropped_no_target
