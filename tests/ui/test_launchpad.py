"""The launchpad: the `qlora_demo` job opens with configs/demo.yaml; a range error is refused before a run starts."""

from __future__ import annotations

import pytest
import yaml

from pipelines.definitions import demo_recipe
from tests import dagster_dev as dev
from tests.test_bad_inputs import CASES

pytestmark = pytest.mark.slow

PRESETS = """query($p: PipelineSelector!) { pipelineOrError(params: $p) { __typename
  ... on Pipeline { presets { name runConfigYaml } } } }"""
TERMINATE = "mutation($id: String!) { terminateRun(runId: $id) { __typename } }"


def presets(port: int, job: str) -> dict[str, dict]:
    selector = dev.repository_selector(port)
    params = {"pipelineName": job, "repositoryName": selector["repositoryName"],
              "repositoryLocationName": selector["repositoryLocationName"]}
    answer = dev.graphql(port, PRESETS, {"p": params})["pipelineOrError"]
    assert answer["__typename"] == "Pipeline", answer
    return {p["name"]: yaml.safe_load(p["runConfigYaml"]) for p in answer["presets"]}


def test_the_demo_job_opens_with_the_demo_recipe(ui_server):
    port = ui_server["port"]
    found = presets(port, "qlora_demo")
    assert found == {"default": demo_recipe()}
    assert found["default"]["ops"]["qlora_adapter"]["config"]["max_steps"] == 600  # what `make demo` trains
    # qlora_pipeline keeps no default: Dagster would apply it to every headless run's unset fields.
    assert presets(port, "qlora_pipeline") == {}


@pytest.mark.xfail(strict=True, reason="Dagster's launchpad checks the config schema only; the step's pydantic "
                                       "check (r > 0) runs when the step starts (see the report of branch browser)")
def test_a_range_error_is_refused_at_launch_with_the_command_line_message(ui_server):
    expected = next(c.expected for c in CASES if c.what == "a bad value").strip()
    config = {**demo_recipe(), "ops": {**demo_recipe()["ops"], "qlora_adapter": {"config": {"r": 0}}}}
    answer = dev.launch_run(ui_server["port"], "qlora_demo", config)
    if answer["__typename"] == "LaunchRunSuccess":  # accepted: stop it rather than let it run beside other tests
        dev.graphql(ui_server["port"], TERMINATE, {"id": answer["run"]["runId"]})
    assert answer["__typename"] != "LaunchRunSuccess", "a run with r: 0 was launched"
    assert expected in str(answer), answer
