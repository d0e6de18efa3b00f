"""Dagster resources for the outside world: the compute device, the base model, MLflow, the registered model and
its champion gate, the artifact store."""

from resources.base_model import BaseModelResource
from resources.compute import GPUResource
from resources.io_manager import ArtifactRefIOManager
from resources.registered_model import RegisteredModelResource
from resources.store import ArtifactStoreResource
from resources.tracking import MLflowResource

__all__ = ["ArtifactRefIOManager", "ArtifactStoreResource", "BaseModelResource", "GPUResource", "MLflowResource",
           "RegisteredModelResource"]
