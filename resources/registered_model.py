"""The registered model and its champion gate: one resource that registered_adapter and its checks share."""

from __future__ import annotations

import dagster as dg

from ops.registry.spec import GateSpec


class RegisteredModelResource(dg.ConfigurableResource, GateSpec):
    """The MLflow registered model the pipeline publishes to, and the metric and margin its champion must win by."""

    def gate(self) -> GateSpec:
        """The settings as the ops take them."""
        return GateSpec(**{name: getattr(self, name) for name in GateSpec.model_fields})
