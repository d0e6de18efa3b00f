"""The tiny pipeline run config the pipeline tests share: one definition, each test overriding what it tests.

Small enough to run the five steps in seconds on two CPU cores: 120 rows of 64 tokens, two training steps,
four generated held-out rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from tests.tiny import TINY_RECIPE


def tiny_run_config(model_name: str, base_dir: Optional[Path] = None, *, data: Optional[dict[str, Any]] = None,
                    train: Optional[dict[str, Any]] = None, evaluation: Optional[dict[str, Any]] = None,
                    gate: Optional[dict[str, Any]] = None, **ops: dict[str, Any]) -> dict[str, Any]:
    """A run config for `dg.materialize` or `python -m pipelines.run`.

    Args:
        model_name: the registered model (a test's own, so tests never share versions).
        base_dir: a local base model directory; None leaves the base_model resource as the caller sets it.
        data, train, evaluation: settings that replace the tiny defaults of those steps.
        gate: primary_metric / min_improvement of the registered_model resource.
        ops: whole step configs to add or replace, by step name (e.g. training_dataset_checks).
    """
    config: dict[str, Any] = {
        "resources": {"registered_model": {"config": {"model_name": model_name, **(gate or {})}}},
        "ops": {
            "training_dataset": {"config": {"max_rows": 120, "max_seq_len": 64, **(data or {})}},
            "qlora_adapter": {"config": {"max_steps": 2, "batch_size": 8, "save_steps": 2, "logging_steps": 1,
                                         "warmup_steps": 1, **TINY_RECIPE, **(train or {})}},
            "adapter_evaluation": {"config": {"num_generation_examples": 4, "max_new_tokens": 4, **(evaluation or {})}},
            **ops,
        },
    }
    if base_dir is not None:
        config["resources"]["base_model"] = {"config": {"model_id": str(base_dir)}}
    return config
