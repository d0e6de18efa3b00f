"""The evaluation checks' rules on hand-written reports (no model, no torch)."""

from ops.evaluation import checks


def test_evaluation_rules():
    report = {"base": {"eval_loss": 3.0}, "tuned": {"eval_loss": 2.0, "exact_match": 0.5}}
    assert checks.beats_base(report).passed
    assert not checks.beats_base({"base": {"eval_loss": 2.0}, "tuned": {"eval_loss": 2.0}}).passed
    assert checks.no_regression(report, "tuned.eval_loss", None, None).passed
    assert checks.no_regression(report, "tuned.eval_loss", 2.5, "1").passed
    assert not checks.no_regression(report, "tuned.exact_match", 0.6, "1").passed
