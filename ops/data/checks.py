"""Quality gates on the prepared data, as plain functions the blocking Dagster checks wrap (assets/checks.py).

Each returns a `CheckOutcome`: whether it passed, one line saying why, and numbers to show in the UI.
"""

from __future__ import annotations

import datasets

from ..core.check_outcome import CheckOutcome
from .spec import DatasetSummary


def _pairs(split: datasets.Dataset) -> list[tuple[str, str]]:
    return list(zip(split["prompt"], split["completion"]))


def no_empty_text(splits: datasets.DatasetDict, fmt: str = "") -> CheckOutcome:
    """Every example has a non-blank prompt and a non-blank response (else it teaches nothing or only a stop).

    The `text` format has no prompt by design (the whole text is the response), so only its response counts."""
    needs_prompt = fmt != "text"
    empty = {name: sum(1 for p, c in _pairs(split) if (needs_prompt and not p.strip()) or not c.strip())
             for name, split in splits.items()}
    total = sum(empty.values())
    what = "an empty prompt or response" if needs_prompt else "an empty text"
    return CheckOutcome(total == 0, f"{total} examples with {what}",
                        {f"empty_{name}": n for name, n in empty.items()})


def truncation_within(summary: DatasetSummary, max_share: float) -> CheckOutcome:
    """The share of examples cut at max_seq_len stays under `max_share` (cut responses teach cut answers)."""
    seen = summary.rows_tokenized  # truncation is counted before empty rows drop
    share = summary.truncated_rows / seen if seen else 0.0
    return CheckOutcome(share <= max_share,
                        f"{summary.truncated_rows} of {seen} examples truncated at {summary.max_seq_len} tokens "
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
