"""Thin Dagster assets: read config, resolve resources, call one op, report metadata. No ML logic here."""

from assets.adapter import TrainConfig, qlora_adapter
from assets.base_model import QuantizeConfig, quantized_base_model
from assets.checks import DataChecksConfig
from assets.dataset import DatasetConfig, training_dataset
from assets.evaluation import EvalConfig, adapter_evaluation
from assets.registry import RegisterConfig, registered_adapter

PIPELINE_ASSETS = [training_dataset, quantized_base_model, qlora_adapter, adapter_evaluation, registered_adapter]

# Each asset's config class, so a run config can be checked before a run starts (pipelines/run.py).
CONFIG_CLASSES = {
    "training_dataset": DatasetConfig,
    "quantized_base_model": QuantizeConfig,
    "qlora_adapter": TrainConfig,
    "adapter_evaluation": EvalConfig,
    "registered_adapter": RegisterConfig,
    "training_dataset_checks": DataChecksConfig,  # the blocking data checks' bounds (assets/checks.py)
}
