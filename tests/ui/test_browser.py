"""The UIs as a person sees them: the pipeline launched in a real `dagster dev`, its pages and its MLflow run opened
in headless Chromium, with screenshots (QLORA_SCREENSHOTS=docs/screenshots copies the README's three)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ops.core.paths import default_tracking_uri
from tests.ui.browser import browser_page, chromium_or_skip, publish_screenshots
from tests.ui.conftest import MODEL_NAME

pytestmark = pytest.mark.slow

ASSETS = ["training_dataset", "quantized_base_model", "qlora_adapter", "adapter_evaluation", "registered_adapter"]
SAMPLE_COLUMNS = ["#", "instruction", "input", "reference", "tuned", "match", "base"]


def dismiss_welcome(page) -> None:
    """Close Dagster's first-visit "Join the Dagster community" dialog, which covers the page on a fresh instance."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=10_000)
    except Exception:  # Playwright's TimeoutError: no dialog this time
        return
    skip.click()


def shoot(page, shots: dict[str, Path], name: str, folder: Path) -> Path:
    """Save the viewport as a screenshot (and the page's HTML beside it, for debugging a failed assertion)."""
    page.wait_for_timeout(2_000)  # let charts and fonts finish drawing after the awaited element appeared
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    (folder / f"{name}.html").write_text(page.content())
    shots[name] = path
    return path


def metadata_row(page, key: str):
    """The asset page's metadata table row whose key cell is exactly `key`."""
    return page.locator("tr", has=page.locator("td", has_text=re.compile(rf"^\s*{key}\s*$"))).first


def mlflow_run(qlora_home: Path) -> tuple[str, str, dict]:
    """(experiment id, run id, metrics) of the run the registration step logged."""
    from mlflow import MlflowClient

    client = MlflowClient(default_tracking_uri(qlora_home))
    experiment = client.get_experiment_by_name("qlora")  # the mlflow resource's default experiment
    assert experiment is not None, f"no MLflow experiment 'qlora' in {qlora_home}"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics, f"expected one MLflow run with metrics, got {len(runs)}"
    return experiment.experiment_id, runs[0].info.run_id, runs[0].data.metrics


def test_the_pipeline_pages_and_its_mlflow_run_show_what_a_person_needs(ui_server, finished_run, mlflow_port,
                                                                         tmp_path):
    executable = chromium_or_skip()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    base, shots = f"http://127.0.0.1:{ui_server['port']}", {}
    folder = tmp_path / "screenshots"
    folder.mkdir()
    with browser_page(executable) as page:
        page.goto(f"{base}/asset-groups")
        dismiss_welcome(page)
        for asset in ASSETS:  # the graph's nodes (SVG foreignObjects), not the list beside it
            page.locator("foreignObject", has_text=asset).first.wait_for()
        page.wait_for_load_state("networkidle")
        shoot(page, shots, "asset_graph", folder)

        page.goto(f"{base}/assets/adapter_evaluation")
        samples = metadata_row(page, "samples")
        samples.wait_for()
        samples.scroll_into_view_if_needed()
        shoot(page, shots, "adapter_evaluation", folder)
        headers = [h.strip() for h in samples.locator("th").all_inner_texts()]
        assert headers == SAMPLE_COLUMNS, f"samples table columns: {headers}"
        assert samples.locator("tbody tr").count() >= 1, "the samples table has no rows"

        experiment_id, run_id, metrics = mlflow_run(ui_server["qlora_home"])
        page.goto(f"http://127.0.0.1:{mlflow_port}/#/experiments/{experiment_id}/runs/{run_id}")
        page.get_by_text(run_id).first.wait_for()  # MLflow polls forever: no "network idle" to wait for
        page.get_by_text("Finished").first.wait_for()
        shoot(page, shots, "mlflow_run", folder)
        text = page.inner_text("body")
        assert MODEL_NAME in text, f"the run page does not name the registered model {MODEL_NAME}"
        missing = [m for m in metrics if m not in text]
        assert not missing, f"metrics of run {run_id} missing from its page: {missing}"

        page.goto(f"{base}/assets/qlora_adapter")
        loss = metadata_row(page, "loss_curve")  # an inline SVG sparkline of the training (and eval) loss
        try:
            loss.wait_for(timeout=20_000)
            loss.scroll_into_view_if_needed()
        except PlaywrightTimeout:
            pass  # asserted below, after the screenshots are saved
        shoot(page, shots, "qlora_adapter", folder)
        publish_screenshots({k: shots[k] for k in ("asset_graph", "adapter_evaluation", "mlflow_run")})
        assert loss.count() == 1, "the qlora_adapter page has no loss_curve metadata"
        image = loss.locator('img[src^="data:image/svg+xml"]')
        assert image.count() == 1, "the loss_curve metadata shows no picture inline"
        assert image.evaluate("img => img.naturalWidth") > 0, "the loss-curve picture does not decode"
        # the full chart (a PNG with axes) opens from its own row
        assert metadata_row(page, "loss_curve_chart").count() == 1, "the qlora_adapter page has no loss_curve_chart"
