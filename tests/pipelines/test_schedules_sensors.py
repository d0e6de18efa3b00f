"""The retraining schedule, the data sensor and the automation conditions, through Dagster's testing APIs."""

import json

import dagster as dg
import pytest
import yaml

from ops.core.paths import BUNDLED_DATASET
from ops.data.source_watch import deep_merge, run_key, source_fingerprint
from pipelines.definitions import defs
from pipelines.schedules import DEFAULT_CRON, DOWNSTREAM, qlora_retrain_schedule
from pipelines.sensors import qlora_data_sensor


@pytest.fixture
def watched(tmp_path, monkeypatch):
    path = tmp_path / "instructions.jsonl"
    path.write_bytes(BUNDLED_DATASET.read_bytes())
    monkeypatch.setenv("QLORA_WATCH_SOURCE", str(path))
    monkeypatch.delenv("QLORA_RETRAIN_RUN_CONFIG", raising=False)
    return path


def change_a_row(path):
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["output"] = "a corrected answer"
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def evaluate(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return qlora_data_sensor(context)


def test_changed_data_requests_one_run_and_same_data_none(watched):
    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        assert len(first.run_requests) == 1
        request, fp = first.run_requests[0], first.cursor
        assert fp == source_fingerprint(str(watched))
        assert request.run_key == run_key(str(watched), fp)
        assert request.run_config["ops"]["training_dataset"]["config"]["source"] == str(watched)

        # A new context (a daemon restart) carries only the stored cursor: unchanged data requests nothing.
        again = evaluate(instance, cursor=fp)
        assert isinstance(again, dg.SkipReason) and "unchanged" in again.skip_message

        change_a_row(watched)
        changed = evaluate(instance, cursor=fp)
        assert len(changed.run_requests) == 1 and changed.cursor != fp
        assert changed.run_requests[0].run_key != request.run_key


def test_sensor_merges_the_retrain_run_config(watched, tmp_path, monkeypatch):
    recipe = tmp_path / "retrain.yaml"
    recipe.write_text(yaml.safe_dump({"ops": {"qlora_adapter": {"config": {"max_steps": 2}},
                                              "training_dataset": {"config": {"max_rows": 50, "source": "other"}}}}))
    monkeypatch.setenv("QLORA_RETRAIN_RUN_CONFIG", str(recipe))
    with dg.instance_for_test() as instance:
        config = evaluate(instance).run_requests[0].run_config
    assert config["ops"]["qlora_adapter"]["config"] == {"max_steps": 2}
    assert config["ops"]["training_dataset"]["config"] == {"max_rows": 50, "source": str(watched)}


def test_watched_folder_and_unreachable_hub(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text("{}\n")
    before = source_fingerprint(str(folder))
    (folder / "b.jsonl").write_text("{}\n")
    assert source_fingerprint(str(folder)) != before
    assert source_fingerprint("someone/dataset", revision_of=lambda _: None) is None
    assert source_fingerprint("someone/dataset", revision_of=lambda _: "abc") != source_fingerprint(
        "someone/dataset", revision_of=lambda _: "def")
    with pytest.raises(FileNotFoundError):
        source_fingerprint(str(tmp_path / "missing.jsonl"))


def test_deep_merge_leaves_inputs_alone():
    base = {"ops": {"a": {"config": {"x": 1}}}}
    assert deep_merge(base, {"ops": {"a": {"config": {"y": 2}}}}) == {"ops": {"a": {"config": {"x": 1, "y": 2}}}}
    assert base == {"ops": {"a": {"config": {"x": 1}}}}


def test_schedule_is_off_weekly_and_targets_the_pipeline(watched):
    assert qlora_retrain_schedule.cron_schedule == DEFAULT_CRON
    assert qlora_retrain_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert qlora_retrain_schedule.job_name == "qlora_pipeline"
    with dg.instance_for_test() as instance:
        request = qlora_retrain_schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests[0]
    assert request.run_config["ops"]["training_dataset"]["config"]["source"] == str(watched)


def test_everything_starts_stopped_and_downstream_assets_are_automated():
    repo = defs.get_repository_def()
    assert all(s.default_status == dg.DefaultSensorStatus.STOPPED for s in repo.sensor_defs)
    conditions = {}
    for asset in repo.asset_graph.get_all_asset_keys():
        conditions[asset.to_user_string()] = repo.asset_graph.get(asset).automation_condition
    assert {k for k, c in conditions.items() if c is not None} == set(DOWNSTREAM)
    assert {j.name for j in repo.get_all_jobs()} >= {"qlora_pipeline", "promote_alias"}


@pytest.mark.slow
def test_two_schedule_ticks_on_unchanged_data_register_one_version(watched, tmp_path, monkeypatch, tiny_base_dir):
    from tests.assets.test_assets import run_config

    recipe = tmp_path / "retrain.yaml"
    recipe.write_text(yaml.safe_dump({**run_config(), "resources": {"base_model": {"config": {"model_id": str(tiny_base_dir)}}}}))
    monkeypatch.setenv("QLORA_RETRAIN_RUN_CONFIG", str(recipe))
    job = defs.resolve_job_def("qlora_pipeline")
    found = []
    with dg.instance_for_test() as instance:
        for _ in range(2):
            tick = qlora_retrain_schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
            result = job.execute_in_process(run_config=tick.run_requests[0].run_config, instance=instance)
            found.append({e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
                          for e in result.get_asset_materialization_events()})
    assert not any(m["cache_hit"].value for m in found[0].values())
    assert all(m["cache_hit"].value for m in found[1].values())  # the second tick did no heavy work
    assert found[1]["registered_adapter"]["version"].value == found[0]["registered_adapter"]["version"].value == 1
    assert found[0]["registered_adapter"]["gate_decision"].value == "champion"
