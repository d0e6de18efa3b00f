"""Exact match: the share of predictions equal to their references after stripping whitespace.

An `evaluate` metric module loaded by path: `evaluate.load(str(METRICS_DIR / "exact_match"))`.
"""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = "Share of predictions that equal their reference once leading and trailing whitespace is stripped."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted strings.
    references: list of reference strings, one per prediction.
    ignore_case: compare case-insensitively (default False).
Returns:
    exact_match: a float in [0, 1] (0.0 for empty inputs).
Example:
    >>> em = evaluate.load("ops/evaluation/metrics/exact_match")
    >>> em.compute(predictions=["a ", "b"], references=["a", "c"])
    {'exact_match': 0.5}
"""


class ExactMatch(evaluate.Metric):
    """Exact string match after whitespace stripping."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str], ignore_case: bool = False) -> dict:
        def norm(s: str) -> str:
            s = s.strip()
            return s.lower() if ignore_case else s

        hits = [norm(p) == norm(r) for p, r in zip(predictions, references)]
        return {"exact_match": sum(hits) / len(hits) if hits else 0.0}
