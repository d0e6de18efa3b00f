"""Thin Dagster assets: read config, resolve resources, call one op, report metadata. No ML logic here."""

from assets.adapter import qlora_adapter
from assets.base_model import quantized_base_model
from assets.dataset import training_dataset
from assets.evaluation import adapter_evaluation
from assets.registry import registered_adapter

PIPELINE_ASSETS = [training_dataset, quantized_base_model, qlora_adapter, adapter_evaluation, registered_adapter]
