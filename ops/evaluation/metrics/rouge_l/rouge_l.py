"""ROUGE-L F1: longest common subsequence over lowercased whitespace tokens, averaged over pairs.

An `evaluate` metric module loaded by path: `evaluate.load(str(METRICS_DIR / "rouge_l"))`. The hub's
"rouge" metric needs a download and the `rouge_score` package; this one needs neither.
"""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = "ROUGE-L F1 (Lin, 2004) on lowercased whitespace tokens, the mean over prediction/reference pairs."
_CITATION = """\
@inproceedings{lin-2004-rouge,
  title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
  author = "Lin, Chin-Yew",
  booktitle = "Text Summarization Branches Out",
  year = "2004",
}
"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted strings.
    references: list of reference strings, one per prediction.
Returns:
    rouge_l: mean ROUGE-L F1 in [0, 1] (0.0 for empty inputs).
Example:
    >>> rl = evaluate.load("ops/evaluation/metrics/rouge_l")
    >>> rl.compute(predictions=["the cat sat"], references=["the cat sat down"])
    {'rouge_l': 0.857142...}
"""


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, by dynamic programming over one row."""
    if len(a) < len(b):
        a, b = b, a  # keep the row as short as possible
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0  # the previous row's value at j - 1
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diag + 1 if x == y else max(above, row[j - 1])
            diag = above
    return row[-1]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one pair; 0.0 when either side has no tokens."""
    pred, ref = prediction.lower().split(), reference.lower().split()
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


class RougeL(evaluate.Metric):
    """Mean ROUGE-L F1 over whitespace tokens."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict:
        scores = [rouge_l_f1(p, r) for p, r in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0}
