"""The launchpad: the `qlora_demo` job opens with configs/demo.yaml, with the fields' help; a range error is refused
before a run starts, with the command line's line."""

from __future__ import annotations

import urllib.parse

import pytest
import yaml

from pipelines.definitions import demo_recipe
from tests import dagster_dev as dev
from tests.ui.browser import browser_page, chromium_or_skip
from tests.ui.test_browser import dismiss_welcome
from tests.test_bad_inputs import CASES

pytestmark = pytest.mark.slow

PRESETS = """query($p: PipelineSelector!) { pipelineOrError(params: $p) { __typename
  ... on Pipeline { presets { name runConfigYaml } } } }"""
SCHEMA = """query($p: PipelineSelector!) { runConfigSchemaOrError(selector: $p) { __typename
  ... on RunConfigSchema { rootDefaultYaml allConfigTypes { ... on CompositeConfigType { fields { name description } } } } } }"""
TERMINATE = "mutation($id: String!) { terminateRun(runId: $id) { __typename } }"
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def selector(port: int, job: str) -> dict:
    repo = dev.repository_selector(port)
    return {"pipelineName": job, "repositoryName": repo["repositoryName"],
            "repositoryLocationName": repo["repositoryLocationName"]}


def presets(port: int, job: str) -> dict[str, dict]:
    answer = dev.graphql(port, PRESETS, {"p": selector(port, job)})["pipelineOrError"]
    assert answer["__typename"] == "Pipeline", answer
    return {p["name"]: yaml.safe_load(p["runConfigYaml"]) for p in answer["presets"]}


def run_config_schema(port: int, job: str) -> dict:
    answer = dev.graphql(port, SCHEMA, {"p": selector(port, job)})["runConfigSchemaOrError"]
    assert answer["__typename"] == "RunConfigSchema", answer
    return answer


def contains(found, wanted) -> bool:
    """Whether every key of `wanted` is in `found` with the same value, nested mappings compared the same way."""
    if isinstance(wanted, dict):
        return isinstance(found, dict) and all(k in found and contains(found[k], v) for k, v in wanted.items())
    return found == wanted


def run_count(port: int) -> int:
    return len(dev.graphql(port, "{ runsOrError { ... on Runs { results { runId } } } }")["runsOrError"]["results"])


def stop(port: int, run_id: str) -> None:
    """Terminate a launched run and wait until it has ended, so it does not run beside other tests."""
    dev.graphql(port, TERMINATE, {"id": run_id})
    dev.wait_for(f"run {run_id} to end", lambda: dev.graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
                 in ("CANCELED", "FAILURE", "SUCCESS"), 120, every_s=3)


def test_the_demo_job_opens_with_the_demo_recipe(ui_server):
    port = ui_server["port"]
    # No preset: the launchpad opens with the job's defaults (rootDefaultYaml), which on qlora_demo are the demo's.
    assert presets(port, "qlora_demo") == presets(port, "qlora_pipeline") == {}
    opened = yaml.safe_load(run_config_schema(port, "qlora_demo")["rootDefaultYaml"])
    assert contains(opened, demo_recipe()), opened
    assert opened["ops"]["qlora_adapter"]["config"]["max_steps"] == 600  # what `make demo` trains
    # qlora_pipeline keeps the steps' own defaults: Dagster would apply the demo's to every headless run's unset fields
    plain = yaml.safe_load(run_config_schema(port, "qlora_pipeline")["rootDefaultYaml"])
    assert plain["ops"]["training_dataset"]["config"]["max_seq_len"] == 256


def test_the_launchpad_shows_the_field_help(ui_server):
    from assets import TrainConfig

    for job in ("qlora_demo", "qlora_pipeline"):
        types = run_config_schema(ui_server["port"], job)["allConfigTypes"]
        help_of_r = {f["description"] for t in types for f in t.get("fields") or [] if f["name"] == "r"}
        assert TrainConfig.model_fields["r"].description in help_of_r


def test_the_demo_recipe_launches_as_the_launchpad_opens(ui_server):
    port = ui_server["port"]
    opened = yaml.safe_load(run_config_schema(port, "qlora_demo")["rootDefaultYaml"])
    answer = dev.launch_run(port, "qlora_demo", opened)
    assert answer["__typename"] == "LaunchRunSuccess", answer
    stop(port, answer["run"]["runId"])  # 600 steps: launching is the point here


def test_a_range_error_is_refused_at_launch_with_the_command_line_message(ui_server):
    expected = next(c.expected for c in CASES if c.what == "a bad value").strip()
    config = {**demo_recipe(), "ops": {**demo_recipe()["ops"], "qlora_adapter": {"config": {"r": 0}}}}
    for job in ("qlora_demo", "qlora_pipeline"):
        answer = dev.launch_run(ui_server["port"], job, config)
        if answer["__typename"] == "LaunchRunSuccess":  # accepted: stop it rather than let it run beside other tests
            stop(ui_server["port"], answer["run"]["runId"])
        assert answer["__typename"] != "LaunchRunSuccess", f"a run of {job} with r: 0 was launched"
        assert expected in answer["message"], answer


def test_the_launchpad_shows_the_refusal(ui_server, tmp_path):
    """In Chromium: the demo opens with its recipe; with `r: 0` in it, Launch Run shows the command line's line."""
    expected = next(c.expected for c in CASES if c.what == "a bad value").strip()
    chromium = chromium_or_skip()
    repo = dev.repository_selector(ui_server["port"])
    job = (f"http://127.0.0.1:{ui_server['port']}/locations/{repo['repositoryName']}@{repo['repositoryLocationName']}"
           "/jobs/qlora_demo/playground")
    recipe = demo_recipe()
    recipe["ops"]["qlora_adapter"]["config"]["r"] = 0
    with browser_page(chromium) as page:
        page.goto(job)
        dismiss_welcome(page)
        page.get_by_text("max_steps").first.wait_for()
        opened = page.locator(".CodeMirror").first.inner_text()
        assert "max_steps: 600" in opened and "max_seq_len: 96" in opened, opened
        page.goto(f"{job}/setup?" + urllib.parse.urlencode({"config": yaml.safe_dump(recipe)}))  # a session with it
        page.get_by_text("max_steps").first.wait_for()
        before = run_count(ui_server["port"])
        page.get_by_role("button", name="Launch Run").click()
        try:
            page.get_by_role("dialog").get_by_text(expected).first.wait_for()
        finally:
            page.screenshot(path=str(tmp_path / "launchpad-refusal.png"))
    assert run_count(ui_server["port"]) == before, "a run was created"
