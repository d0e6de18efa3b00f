"""The data checks' rules on small hand-made splits (no model, no torch)."""

import datasets

from ops.data import checks
from ops.data.spec import DatasetSummary


def splits(train: list[tuple[str, str]], held_out: list[tuple[str, str]]) -> datasets.DatasetDict:
    def ds(pairs):
        return datasets.Dataset.from_dict({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]})

    return datasets.DatasetDict({"train": ds(train), "eval": ds(held_out)})


def test_data_rules():
    clean = splits([("q1", "a1"), ("q2", "a2")], [("q3", "a3")])
    assert checks.no_empty_text(clean).passed and checks.splits_disjoint(clean).passed
    assert not checks.no_empty_text(splits([("q1", " ")], [("q3", "a3")])).passed
    text_rows = splits([("", "some text"), ("", "more text")], [("", "held-out text")])
    assert not checks.no_empty_text(text_rows).passed  # an empty prompt in a prompted format teaches nothing
    assert checks.no_empty_text(text_rows, "text").passed  # the text format has no prompt by design
    assert not checks.no_empty_text(splits([("", " ")], [("", "t")]), "text").passed
    leaky = checks.splits_disjoint(splits([("q1", "a1"), ("q3", "a3")], [("q3", "a3")]))
    assert not leaky.passed and leaky.metadata["overlapping_examples"] == 1
    assert checks.enough_rows(clean, 2, 1).passed and not checks.enough_rows(clean, 3, 1).passed
    summary = DatasetSummary(format="alpaca", rows_loaded=100, duplicates_dropped=0, ignored_columns=[],
                             near_duplicate_prompts_across_split=0, rows=90, train_rows=80, eval_rows=10, tokens=5000,
                             target_tokens=900, truncated_rows=20, dropped_no_target=10, max_seq_len=64,
                             system_message=None, preview=[])
    assert checks.truncation_within(summary, 0.2).passed and not checks.truncation_within(summary, 0.1).passed
