"""Settings of registered_adapter: model name, alias, the champion gate's metric and margin, whether to log the base."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


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
