"""The project's `evaluate` metric modules, loaded by path, on hand-made strings with known scores."""

from __future__ import annotations

import evaluate
import pytest

from ops.evaluation.report import METRICS_DIR


@pytest.fixture(scope="module")
def exact_match() -> evaluate.EvaluationModule:
    return evaluate.load(str(METRICS_DIR / "exact_match"), keep_in_memory=True)


@pytest.fixture(scope="module")
def rouge_l() -> evaluate.EvaluationModule:
    return evaluate.load(str(METRICS_DIR / "rouge_l"), keep_in_memory=True)


@pytest.mark.parametrize(
    "predictions, references, expected",
    [
        (["five", " bridge\n"], ["five", "bridge"], 1.0),  # outer whitespace does not count
        (["four", "Bridge"], ["five", "bridge"], 0.0),  # case counts by default
        (["five", "zebra apple"], ["five", "zebra  apple"], 0.5),  # inner whitespace does count
    ],
)
def test_exact_match_known_values(exact_match, predictions, references, expected):
    assert exact_match.compute(predictions=predictions, references=references)["exact_match"] == expected


def test_exact_match_ignore_case(exact_match):
    result = exact_match.compute(predictions=["Bridge", "ZEBRA "], references=["bridge", "zebra"], ignore_case=True)
    assert result == {"exact_match": 1.0}


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("The Cat", "the cat", 1.0),  # lowercased
        ("apple banana", "cherry", 0.0),
        ("the cat sat", "the cat sat down", 6 / 7),  # lcs 3; p 3/3, r 3/4
        ("a b c d", "a c b d", 0.75),  # lcs 3 (a b d or a c d); p = r = 3/4
        ("w1 x w2 y w3 z", "x y z", 2 * 0.5 * 1.0 / 1.5),  # lcs 3 with gaps; p 3/6, r 3/3
        ("", "anything", 0.0),  # nothing predicted scores zero, not a division error
    ],
)
def test_rouge_l_known_pairs(rouge_l, prediction, reference, expected):
    result = rouge_l.compute(predictions=[prediction], references=[reference])
    assert result["rouge_l"] == pytest.approx(expected, abs=1e-6)


def test_rouge_l_is_the_mean_over_pairs(rouge_l):
    result = rouge_l.compute(predictions=["the cat sat", "a b c d", "x"], references=["the cat sat down", "a c b d", "y"])
    assert result["rouge_l"] == pytest.approx((6 / 7 + 0.75 + 0.0) / 3, abs=1e-6)
