"""Settings of adapter_evaluation (pydantic, a help text per field); assets/evaluation.py's config inherits them."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, field_validator

from ..core.validation import positive


class EvalSpec(BaseModel):
    max_new_tokens: int = Field(32, description="Tokens to generate per held-out prompt.")
    num_generation_examples: int = Field(64, description="Held-out rows scored with generation metrics.")
    # 10: enough rows to see which kinds of question the adapter gets right, few enough to read.
    num_samples_shown: int = Field(10, description="Sample generations shown in the metadata and the report "
                                                   "(at most num_generation_examples).")
    batch_size: Optional[int] = Field(
        None, description="Rows per batch for loss and generation; unset: as many as fit in a quarter of free memory.")

    @field_validator("max_new_tokens", "num_generation_examples")
    @classmethod
    def _pos(cls, v, info):
        return int(positive(info.field_name, v))

    @field_validator("num_samples_shown")
    @classmethod
    def _shown(cls, v, info):
        if v < 0:
            raise ValueError(f"num_samples_shown must be >= 0, got {v}")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v, info):
        return None if v is None else int(positive(info.field_name, v))
