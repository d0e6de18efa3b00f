"""deploy/dagster.yaml's answer to a crashed run holding the `gpu` pool, on PostgreSQL: the daemon's slot-freeing
pass (run monitoring's free_slots_after_run_end_seconds) gives the dead run's slot back.

The pass is Dagster's own (`dagster._daemon.monitoring.concurrency`), run once here as the daemon runs it each
monitoring round; the file's 120 s is cut to 1 s so the test does not wait two minutes.
"""

from __future__ import annotations

import logging
import time
import uuid
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml

from ops.core.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def production_instance(postgres_server, tmp_path, monkeypatch) -> dg.DagsterInstance:
    """deploy/dagster.yaml on its own database, with free_slots_after_run_end_seconds cut to 1."""
    from pipelines.instance import instance_from_file

    for key, value in postgres_server.dagster_env("dagster_slots").items():
        monkeypatch.setenv(key, value)
    config = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    config["run_monitoring"]["free_slots_after_run_end_seconds"] = 1
    path = tmp_path / "dagster.yaml"
    path.write_text(yaml.safe_dump(config))
    return instance_from_file(path, tmp_path / "home")


def started_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    run = instance.add_run(dg.DagsterRun(job_name="qlora_pipeline", run_id=str(uuid.uuid4())))
    instance.handle_new_event(dg.EventLogEntry(  # as the run worker reports it
        error_info=None, level=logging.INFO, user_message="", run_id=run.run_id, timestamp=time.time(),
        dagster_event=dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name)))
    return run


def test_a_crashed_run_gives_its_gpu_slot_back_after_free_slots_after_run_end_seconds(production_instance):
    from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

    storage = production_instance.event_log_storage
    assert storage.supports_global_concurrency_limits  # else the setting would silently do nothing
    assert storage.initialize_concurrency_limit_to_default("gpu")  # pools.default_limit from the file: 1
    crashed, waiting = started_run(production_instance), started_run(production_instance)
    assert storage.claim_concurrency_slot("gpu", crashed.run_id, "qlora_adapter").is_claimed
    assert not storage.claim_concurrency_slot("gpu", waiting.run_id, "qlora_adapter").is_claimed  # pool of one

    # The worker died inside its training step; run monitoring fails the run, the slot stays taken.
    production_instance.report_run_failed(production_instance.get_run_by_id(crashed.run_id), "worker stopped beating")
    assert crashed.run_id in storage.get_concurrency_run_ids()
    time.sleep(2.5)  # past free_slots_after_run_end_seconds (1 s, whole seconds in the run's end time)
    context = SimpleNamespace(instance=production_instance)  # the daemon's workspace context; the pass reads .instance
    list(execute_concurrency_slots_iteration(context, logging.getLogger("test")))
    assert crashed.run_id not in storage.get_concurrency_run_ids()
    assert storage.claim_concurrency_slot("gpu", waiting.run_id, "qlora_adapter").is_claimed
