"""adapter_evaluation and registered_adapter metadata a person reads: readable samples, phases, durations, links
to the MLflow UI, and the base's numbers reused when only training settings change (issue 13)."""

from __future__ import annotations

import pytest

from tests.assets.test_assets import materialize
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow
UI = "http://127.0.0.1:5000"


def test_new_training_settings_reuse_the_base_numbers_and_metadata_links_to_mlflow(tiny_base_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_UI_URL", UI)
    evaluation = {"num_generation_examples": 10, "num_samples_shown": 10}
    first = materialize(tiny_base_dir, tiny_run_config("tiny-links", train={"r": 4}, evaluation=evaluation))
    ev, reg = first["adapter_evaluation"], first["registered_adapter"]
    assert ev["base_cache_hit"] is False and ev["base_fingerprint"]
    # the samples: 10 numbered rows, instruction and input without the Alpaca scaffolding, a mark per row
    table = ev["samples"]  # a Dagster table: the UI shows it inline
    assert [c.name for c in table.schema.columns] == ["#", "instruction", "input", "reference", "tuned", "match", "base"]
    rows = [record.data for record in table.records]
    assert [row["#"] for row in rows] == [str(i) for i in range(1, 11)]
    assert not any("###" in cell for row in rows for cell in row.values())
    assert all(row["match"] in ("✓", "✗") for row in rows)
    assert "| base |" in ev["phases"] and "| tuned |" in ev["phases"] and "load (base + adapter)" in ev["phases"]
    assert ev["duration"].endswith(" s") and ev["seconds"] > 0
    run_page = f"{UI}/#/experiments/"
    assert ev["mlflow_run"].startswith(run_page) and ev["mlflow_run"] == reg["mlflow_run"]
    assert ev["mlflow_run"].endswith(f"/runs/{reg['mlflow_run_id']}")
    assert reg["model_version_page"] == f"{UI}/#/models/tiny-links/versions/{reg['version']}"

    second = materialize(tiny_base_dir, tiny_run_config("tiny-links", train={"r": 2}, evaluation=evaluation))
    ev2 = second["adapter_evaluation"]
    assert ev2["cache_hit"] is False and ev2["base_cache_hit"] is True
    assert ev2["base_fingerprint"] == ev["base_fingerprint"] and ev2["base_eval_loss"] == ev["base_eval_loss"]
    assert "base (cached)" in ev2["phases"] and ev2["mlflow_run"] != ev["mlflow_run"]
