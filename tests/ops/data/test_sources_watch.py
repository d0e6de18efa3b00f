"""The retraining sensor's run config keeps a mixture recipe whole instead of setting a source beside it."""

from __future__ import annotations

from ops.data.source_watch import with_source
from ops.data.spec import DataSpec


def test_a_mixture_recipe_is_kept_and_stays_valid():
    mixture = [{"source": "data/a.jsonl", "share": 0.5}, {"source": "data/b.jsonl", "share": 0.5}]
    recipe = {"ops": {"training_dataset": {"config": {"mixture": mixture, "max_rows": 50}}}}
    merged = with_source(recipe, "data/a.jsonl")
    assert merged == recipe and merged is not recipe
    DataSpec(**merged["ops"]["training_dataset"]["config"])  # would raise "give either source or mixture"


def test_a_single_source_recipe_gets_the_watched_source():
    recipe = {"ops": {"training_dataset": {"config": {"max_rows": 50}}}}
    assert with_source(recipe, "data/new.jsonl")["ops"]["training_dataset"]["config"] == {"max_rows": 50,
                                                                                         "source": "data/new.jsonl"}
