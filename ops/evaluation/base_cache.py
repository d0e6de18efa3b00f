"""The base model's evaluation as its own content-addressed store entry, shared by every adapter on that base.

The base's numbers depend on the base, the dataset, the evaluation code and settings and the compute device and
dtype, never on the adapter: a new adapter (another `r`, learning rate, ...) on the same base and data reads them
from `<store>/base_evaluation/<fingerprint>/` instead of generating with the base again (the costliest part of an
evaluation: an untrained base rarely stops before max_new_tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.fingerprint import fingerprint
from ..core.store import ArtifactStore, StepSummary
from .report import ModelScores
from .spec import EvalSpec

BASE_STEP = "base_evaluation"  # the store folder of base entries
# Settings that only decide what the report shows, not what the base computes.
DISPLAY_ONLY = {"num_samples_shown"}


class BaseEvaluation(StepSummary):
    """The base model's scores and generations on one dataset's held-out split (an entry's summary)."""

    scores: ModelScores
    predictions: list[str]  # answer text per generation row, in row order
    eval_rows: int
    generation_rows: int
    device: str
    compute_dtype: str
    phases: dict[str, float]  # base.loss_s, base.generate_s (seconds), base.generated_tokens
    seconds: float  # scoring the base, loss and generation


@dataclass(frozen=True)
class BaseCache:
    """Where the base entry of one evaluation lives: `<store root>/base_evaluation/<fingerprint>/`."""

    store: ArtifactStore
    fingerprint: str
    force: bool = False  # recompute the entry even when it exists


def base_settings(spec: EvalSpec, device_type: str, dtype_name: str) -> dict:
    """The settings a base entry is computed with: the evaluation settings that change its numbers, and where it ran
    (bf16 on a GPU and fp32 on a CPU give different numbers; the tuned side must be compared with the same)."""
    return {**spec.model_dump(exclude=DISPLAY_ONLY), "device": device_type, "compute_dtype": dtype_name}


def base_fingerprint(code_version: str, base_fp: str, dataset_fp: str, spec: EvalSpec, device_type: str,
                     dtype_name: str) -> str:
    """The base entry's fingerprint: evaluation code version, base and dataset fingerprints, base_settings.

    Args:
        code_version: the evaluation step's code version.
        base_fp, dataset_fp: the quantized base's and the prepared dataset's fingerprints.
        spec, device_type, dtype_name: as `base_settings`.
    Returns:
        a hex fingerprint; the adapter is no part of it.
    """
    return fingerprint(code_version, base_settings(spec, device_type, dtype_name), {"base": base_fp,
                                                                                    "dataset": dataset_fp})
