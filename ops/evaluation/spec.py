"""Settings of adapter_evaluation (pydantic, a help text per field); assets/evaluation.py's config inherits them."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from ..core.validation import positive


class EvalSpec(BaseModel):
    max_new_tokens: int = Field(32, description="Tokens to generate per held-out prompt.")
    num_generation_examples: int = Field(64, description="Held-out rows scored with generation metrics.")
    num_samples_shown: int = Field(5, description="Sample generations shown in the metadata.")
    batch_size: int = Field(16, description="Batch size for loss and generation.")

    @field_validator("max_new_tokens", "num_generation_examples", "batch_size")
    @classmethod
    def _pos(cls, v, info):
        return int(positive(info.field_name, v))
