"""Quality gates on the prepared data and on the evaluation, as plain functions the Dagster checks wrap.

Each returns a `CheckOutcome`: whether it passed, one line saying why, and numbers to show in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import datasets

from .champion import improvement, lower_is_better


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _pairs(split: datasets.Dataset) -> list[tuple[str, str]]:
    return list(zip(split["prompt"], split["completion"]))


def no_empty_text(splits: datasets.DatasetDict) -> CheckOutcome:
    """Every example has a non-blank prompt and a non-blank response (else it teaches nothing or only a stop)."""
    empty = {name: sum(1 for p, c in _pairs(split) if not p.strip() or not c.strip()) for name, split in splits.items()}
    total = sum(empty.values())
    return CheckOutcome(total == 0, f"{total} examples with an empty prompt or response",
                        {f"empty_{name}": n for name, n in empty.items()})


def truncation_within(summary: dict, max_share: float) -> CheckOutcome:
    """The share of examples cut at max_seq_len stays under `max_share` (cut responses teach cut answers)."""
    seen = summary["rows"] + summary.get("dropped_no_target", 0)  # truncation is counted before empty rows drop
    share = summary["truncated_rows"] / seen if seen else 0.0
    return CheckOutcome(share <= max_share,
                        f"{summary['truncated_rows']} of {seen} examples truncated at {summary['max_seq_len']} tokens "
                        f"({share:.1%}, bound {max_share:.1%})",
                        {"truncated_share": share, "max_truncated_share": max_share})


def splits_disjoint(splits: datasets.DatasetDict) -> CheckOutcome:
    """No (prompt, response) pair is in both train and eval, or the eval loss would flatter the adapter."""
    overlap = set(_pairs(splits["train"])) & set(_pairs(splits["eval"]))
    return CheckOutcome(not overlap, f"{len(overlap)} examples appear in both train and eval",
                        {"overlapping_examples": len(overlap)})


def enough_rows(splits: datasets.DatasetDict, min_train: int, min_eval: int) -> CheckOutcome:
    train, held_out = len(splits["train"]), len(splits["eval"])
    return CheckOutcome(train >= min_train and held_out >= min_eval,
                        f"{train} train / {held_out} eval rows (need at least {min_train} / {min_eval})",
                        {"train_rows": train, "eval_rows": held_out})


def beats_base(report: dict) -> CheckOutcome:
    """The adapter must lower the held-out loss of the base model, or training did not help."""
    base, tuned = report["base"]["eval_loss"], report["tuned"]["eval_loss"]
    return CheckOutcome(tuned < base, f"eval loss {tuned:.4f} tuned vs {base:.4f} base",
                        {"base_eval_loss": base, "tuned_eval_loss": tuned, "improvement": base - tuned})


def no_regression(report: dict, metric: str, champion_value: Optional[float],
                  champion_version: Optional[str]) -> CheckOutcome:
    """The adapter is no worse than the current champion on `metric` (equal counts as no regression)."""
    section, name = metric.split(".", 1)
    candidate = report[section][name]
    if champion_version is None or champion_value is None:
        return CheckOutcome(True, f"no champion with {metric} to compare with", {metric: candidate})
    gain = improvement(metric, candidate, champion_value)
    direction = "lower" if lower_is_better(metric) else "higher"
    return CheckOutcome(gain >= 0, f"{metric} {candidate:.4f} vs champion v{champion_version} {champion_value:.4f} "
                        f"({direction} is better)",
                        {metric: candidate, "champion_value": champion_value, "champion_version": champion_version})
