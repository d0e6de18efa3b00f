"""Settings of registered_adapter: the registered model and its champion gate (one resource shares them with the
evaluation checks), and how a version is published (alias, whether the base is copied)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from ..evaluation.report import GATE_METRICS


class GateSpec(BaseModel):
    """Which registered model the adapter goes to and how its champion is chosen."""

    model_name: str = Field("qlora-adapter", description="Registered model name in the MLflow registry.")
    primary_metric: str = Field(
        "tuned.eval_loss",
        description="Evaluation metric the champion gate compares, e.g. tuned.eval_loss (lower is better) or "
        "tuned.exact_match (higher is better); names ending in loss/perplexity count as lower-is-better.",
    )
    min_improvement: float = Field(0.0, description="Margin by which a new version must beat the champion to replace it.")

    @model_validator(mode="after")
    def _gate(self):
        if not self.model_name.strip():
            raise ValueError("model_name must not be empty")
        if "/" in self.model_name or ":" in self.model_name:  # MLflow refuses both (they delimit model URIs)
            raise ValueError(f"model_name must not contain '/' or ':', got {self.model_name!r}")
        if self.primary_metric not in GATE_METRICS:
            raise ValueError(f"primary_metric must be one of {', '.join(GATE_METRICS)}, got {self.primary_metric!r}")
        if self.min_improvement < 0:
            raise ValueError(f"min_improvement must be >= 0, got {self.min_improvement}")
        return self


class PublishSpec(BaseModel):
    """How a new version is published: the alias it gets and whether the 4-bit base travels with it."""

    alias: str = Field("candidate", description="Alias moved to the new version (the README lists the aliases).")
    log_base: bool = Field(
        True,
        description="Copy the 4-bit base into the logged model (self-contained). Off: a hub base is recorded by id "
        "and revision and quantized again on load; local and embedded bases are always copied.",
    )

    @model_validator(mode="after")
    def _alias(self):
        if not self.alias.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"alias must be letters, digits, '-' or '_', got {self.alias!r}")
        if self.alias in ("champion", "challenger"):  # the champion gate owns these two
            raise ValueError(f"alias {self.alias!r} is set by the champion gate; use another alias (e.g. candidate)")
        return self


class RegistrySpec(GateSpec, PublishSpec):
    """Everything one registration needs: the gate's settings and the publishing ones."""


def registration_fields(spec: RegistrySpec) -> dict[str, Any]:
    """The settings that decide what is registered, for the fingerprint: the gate's metric and margin decide an
    alias, not the version, so changing them must not register the adapter again."""
    return spec.model_dump(exclude={"primary_metric", "min_improvement"})
