"""The real `dagster dev`: turn the data sensor on through GraphQL, change the data, see one run requested and finish."""

import json

import pytest
import yaml

from ops.core.paths import BUNDLED_DATASET
from ops.data.source_watch import run_key, source_fingerprint
from tests import dagster_dev as dev
from tests.dagster_dev import graphql, wait_for
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow

SENSOR = "qlora_data_sensor"


def dev_run_config(base_dir) -> dict:
    # One process: step subprocesses would each import torch.
    return {"execution": {"config": {"in_process": {}}}, **tiny_run_config("dev-sensor-test", base_dir)}


@pytest.fixture
def dagster_dev(tmp_path, qlora_home, tiny_base_dir):
    """`dagster dev` on a free loopback port with its own instance, data home, watched file and run config."""
    watched = tmp_path / "instructions.jsonl"
    watched.write_bytes(BUNDLED_DATASET.read_bytes())
    run_config = tmp_path / "retrain.yaml"
    run_config.write_text(yaml.safe_dump(dev_run_config(tiny_base_dir)))
    env = {"DAGSTER_HOME": str(dev.dagster_home(tmp_path)), "QLORA_HOME": str(qlora_home),
           "QLORA_WATCH_SOURCE": str(watched), "QLORA_RETRAIN_RUN_CONFIG": str(run_config),
           "QLORA_SENSOR_INTERVAL_S": "5"}
    with dev.dagster_dev(tmp_path, env) as server:
        yield {**server, "watched": watched}


SET_CURSOR = """mutation($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, cursor: $c) {
  __typename ... on PythonError { message } } }"""
START = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
TICKS = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor {
  sensorState { ticks(limit: 20) { status skipReason runIds timestamp } } } } }"""
RUNS = """query($sensor: String!) { runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $sensor}]}) {
  ... on Runs { results { runId status tags { key value } } } } }"""


def test_sensor_turned_on_in_dagster_dev_runs_once_per_data_change(dagster_dev):
    port, watched = dagster_dev["port"], dagster_dev["watched"]
    selector = {**dev.repository_selector(port), "sensorName": SENSOR}
    # The instance has already seen this content (as after an earlier run), so turning the sensor on starts no run.
    before = source_fingerprint(str(watched))
    assert graphql(port, SET_CURSOR, {"s": selector, "c": before})["setSensorCursor"]["__typename"] == "Sensor"
    started = graphql(port, START, {"s": selector})["startSensor"]
    assert started["__typename"] == "Sensor" and started["sensorState"]["status"] == "RUNNING", started

    def ticks():
        return graphql(port, TICKS, {"s": selector})["sensorOrError"]["sensorState"]["ticks"]

    wait_for("a tick that skips unchanged data", lambda: any(t["status"] == "SKIPPED" for t in ticks()), 90)
    assert graphql(port, RUNS, {"sensor": SENSOR})["runsOrError"]["results"] == []

    lines = watched.read_text().splitlines()
    for i in range(3):  # a few rows edited, as a data refresh would
        row = json.loads(lines[i])
        row["output"] = f"changed answer {i}"
        lines[i] = json.dumps(row)
    watched.write_text("\n".join(lines) + "\n")
    after = source_fingerprint(str(watched))

    def finished_runs():
        runs = graphql(port, RUNS, {"sensor": SENSOR})["runsOrError"]["results"]
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        assert not failed, f"run failed; see {dagster_dev['log']} and the run's logs: {failed}"
        return [r for r in runs if r["status"] == "SUCCESS"]

    runs = wait_for("the requested run to finish", finished_runs, 240, every_s=5)
    assert len(runs) == 1
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags["dagster/run_key"] == run_key(str(watched), after)
    assert tags["qlora/data_fingerprint"] == after

    # Later ticks see the same content again: they skip and request nothing more.
    latest = max(t["timestamp"] for t in ticks())
    wait_for("another tick", lambda: any(t["timestamp"] > latest and t["status"] == "SKIPPED" for t in ticks()), 60)
    assert len(graphql(port, RUNS, {"sensor": SENSOR})["runsOrError"]["results"]) == 1
