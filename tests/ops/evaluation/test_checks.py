"""The evaluation checks' rules on hand-written reports (no model, no torch)."""

import pytest

from ops.evaluation import checks
from ops.evaluation.report import EvaluationReport, ModelScores


def report(base_loss: float, tuned_loss: float, tuned_exact_match: float = 0.5) -> EvaluationReport:
    base = ModelScores(eval_loss=base_loss, perplexity=2.0, exact_match=0.0, rouge_l=0.0)
    tuned = ModelScores(eval_loss=tuned_loss, perplexity=2.0, exact_match=tuned_exact_match, rouge_l=0.5)
    delta = ModelScores(**{k: getattr(tuned, k) - getattr(base, k) for k in ModelScores.model_fields})
    return EvaluationReport(base=base, tuned=tuned, delta=delta, eval_rows=4, generation_rows=4, samples=[],
                            device="cpu", compute_dtype="float32", seconds=0.1)


def test_evaluation_rules():
    assert checks.beats_base(report(3.0, 2.0)).passed
    assert not checks.beats_base(report(2.0, 2.0)).passed
    assert checks.no_regression(report(3.0, 2.0), "tuned.eval_loss", None, None).passed
    assert checks.no_regression(report(3.0, 2.0), "tuned.eval_loss", 2.5, "1").passed
    assert not checks.no_regression(report(3.0, 2.0), "tuned.exact_match", 0.6, "1").passed


def test_an_unknown_metric_is_named():
    with pytest.raises(ValueError, match="unknown metric 'tuned.accuracy'"):
        report(3.0, 2.0).value("tuned.accuracy")
