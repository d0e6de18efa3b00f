"""Dagster resources for the outside world: the compute device, the base model, MLflow, the registered model and
its champion gate, the artifact store, the training launcher (a subprocess here, a pod on Kubernetes)."""

from resources.base_model import BaseModelResource
from resources.compute import GPUResource
from resources.io_manager import ArtifactRefIOManager
from resources.registered_model import RegisteredModelResource
from resources.store import ArtifactStoreResource
from resources.tracking import MLflowResource
from resources.training_launcher import TrainingLauncher, TrainingLaunchFailed

__all__ = ["ArtifactRefIOManager", "ArtifactStoreResource", "BaseModelResource", "GPUResource", "MLflowResource",
           "RegisteredModelResource", "TrainingLauncher", "TrainingLaunchFailed"]
