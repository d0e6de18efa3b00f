"""qlora_adapter's metadata with evaluation during training: which step the adapter came from, and the eval curve."""

from __future__ import annotations

import pytest

from tests.assets.test_assets import materialize
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow


def test_metadata_names_the_best_step_and_the_eval_curve(tiny_base_dir):
    config = tiny_run_config("tiny-eval", train={"max_steps": 4, "eval_steps": 2, "save_steps": 2})
    steps = ["training_dataset", "quantized_base_model", "qlora_adapter"]
    config["ops"] = {step: config["ops"][step] for step in steps if step in config["ops"]}
    found = materialize(tiny_base_dir, config, selection=steps)
    adapter = found["qlora_adapter"]
    assert (adapter["steps"], adapter["max_steps"], adapter["stopped_early"]) == (4, 4, False)
    assert adapter["best_step"] in (2, 4) and 0 < adapter["epochs"] < 1  # 4 steps of 8 rows: under one pass
    rows = [line for line in adapter["eval_history"].splitlines() if line.startswith("| 2 |") or line.startswith("| 4 |")]
    assert len(rows) == 2, adapter["eval_history"]
    best_row = next(r for r in rows if r.startswith(f"| {adapter['best_step']} |"))
    assert float(best_row.split("|")[2]) == pytest.approx(adapter["best_eval_loss"], rel=1e-3)
    # the loss curve as a picture the UI shows inline, and the numbers behind it
    import base64
    import io

    from PIL import Image

    prefix = "![loss curve](data:image/png;base64,"
    chart = adapter["loss_curve_chart"]
    assert chart.startswith(prefix) and chart.endswith(")")
    with Image.open(io.BytesIO(base64.b64decode(chart[len(prefix):-1]))) as picture:
        assert picture.format == "PNG" and picture.width >= 600
    # Dagster's UI shows Markdown inline only under 1,000 characters: the sparkline fits, with both curves
    sparkline = adapter["loss_curve"]
    assert len(sparkline) < 1000 and "](data:image/svg+xml;base64," in sparkline
    svg = base64.b64decode(sparkline.split("base64,")[1][:-1]).decode()
    assert svg.count("<polyline") == 2
    assert "| step | loss |" in adapter["loss_history"]
