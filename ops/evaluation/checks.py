"""Quality gates on the evaluation report: the adapter beats its base, and it does not regress against the champion.

Each returns a `CheckOutcome`: whether it passed, one line saying why, and numbers to show in the UI.
"""

from __future__ import annotations

from typing import Optional

from ..core.check_outcome import CheckOutcome
from .report import EvaluationReport, improvement, lower_is_better


def beats_base(report: EvaluationReport) -> CheckOutcome:
    """The adapter must lower the held-out loss of the base model, or training did not help."""
    base, tuned = report.base.eval_loss, report.tuned.eval_loss
    return CheckOutcome(tuned < base, f"eval loss {tuned:.4f} tuned vs {base:.4f} base",
                        {"base_eval_loss": base, "tuned_eval_loss": tuned, "improvement": base - tuned})


def no_regression(report: EvaluationReport, metric: str, champion_value: Optional[float],
                  champion_version: Optional[str]) -> CheckOutcome:
    """The adapter is no worse than the current champion on `metric` (equal counts as no regression)."""
    candidate = report.value(metric)
    if champion_version is None or champion_value is None:
        return CheckOutcome(True, f"no champion with {metric} to compare with", {metric: candidate})
    gain = improvement(metric, candidate, champion_value)
    direction = "lower" if lower_is_better(metric) else "higher"
    return CheckOutcome(gain >= 0, f"{metric} {candidate:.4f} vs champion v{champion_version} {champion_value:.4f} "
                        f"({direction} is better)",
                        {metric: candidate, "champion_value": champion_value, "champion_version": champion_version})
