"""MLflow tracking and registry. Credentials come from MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import dagster as dg
from pydantic import Field

from ops.core.paths import default_tracking_uri

if TYPE_CHECKING:  # ops.registry.tracking imports MLflow: loaded by the steps that talk to it (in target())
    from ops.registry.tracking import MlflowTarget


class MLflowResource(dg.ConfigurableResource):
    """Tracking and registry URIs; the embedded default is a sqlite database under the data home."""

    experiment: str = Field("qlora", description="MLflow experiment that holds one run per trained adapter.")
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI; default sqlite under $QLORA_HOME.")
    registry_uri: Optional[str] = Field(None, description="Model registry URI; default: the tracking URI.")
    artifact_location: Optional[str] = Field(
        None, description="Artifact root for new experiments; default: next to a sqlite database, else the server's choice."
    )

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri()

    def target(self) -> MlflowTarget:
        """Where the ops send runs and versions."""
        from ops.registry.tracking import MlflowTarget

        return MlflowTarget(self.resolved_tracking_uri(), self.resolved_registry_uri(), self.experiment,
                            self.artifact_location)
