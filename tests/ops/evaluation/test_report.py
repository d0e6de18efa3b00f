"""The report as a person reads it: durations in minutes where long, where the time went, a cached base said so."""

from __future__ import annotations

import pytest

from ops.evaluation.report import duration_text, phases_markdown, phases_rows, report_markdown
from tests.tiny import tiny_report


@pytest.mark.parametrize("seconds, text", [(0.04, "0.0 s"), (42.34, "42.3 s"), (59.96, "1 min 0 s"), (60, "1 min 0 s"),
                                           (252.4, "4 min 12 s"), (3599.6, "1 h 0 min"), (7380, "2 h 3 min")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def test_phases_rows_per_side_and_a_cached_base():
    computed = tiny_report().model_copy(update={"phases": {
        "load_s": 1.5, "base.loss_s": 2.0, "base.generate_s": 8.0, "base.generated_tokens": 400.0,
        "tuned.loss_s": 2.5, "tuned.generate_s": 4.0, "tuned.generated_tokens": 100.0}})
    load, base, tuned = phases_rows(computed)
    assert load["total s"] == 1.5 and base["tokens/s"] == 50.0 and base["total s"] == 10.0
    assert (tuned["generated tokens"], tuned["tokens/s"], tuned["total s"]) == (100, 25.0, 6.5)
    cached = computed.model_copy(update={"base_cache_hit": True, "base_fingerprint": "abc123", "seconds": 252.0,
                                         "phases": {"load_s": 1.5, "base.cached_s": 75.0, "tuned.loss_s": 2.5,
                                                    "tuned.generate_s": 4.0, "tuned.generated_tokens": 100.0}})
    assert [r["phase"] for r in phases_rows(cached)] == ["load (base + adapter)", "base (cached)", "tuned"]
    assert "saved 1 min 15 s" in phases_markdown(cached)
    text = report_markdown(cached)
    assert "4 min 12 s (252 s)" in text and "cache entry abc123" in text and "## Where the time went" in text
    assert phases_markdown(tiny_report()) == "_empty_"  # reports from before phases existed
