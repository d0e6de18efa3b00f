"""The Dagster instance: $DAGSTER_HOME when set, else `$QLORA_HOME/dagster` with the project's dagster.yaml."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import dagster as dg

from ops.core.locks import file_lock
from ops.core.paths import REPO_ROOT, qlora_home

INSTANCE_TEMPLATE = REPO_ROOT / "dagster.yaml"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or qlora_home() / "dagster").resolve()


def get_instance() -> dg.DagsterInstance:
    """A persistent instance, so runs and materializations outlive the process and show in the UI."""
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    # Two runners starting at once on a fresh home would both create the sqlite schemas and corrupt their
    # migration history ("more than one head"); the first creates them while the second waits.
    with file_lock(home / ".init.lock"):
        config = home / "dagster.yaml"
        if not config.exists() and INSTANCE_TEMPLATE.exists():
            shutil.copy(INSTANCE_TEMPLATE, config)
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # touch run storage, so its schema exists before the lock is let go
        instance.all_instigator_state()  # and the schedule storage's
    return instance


RUNNER_HOST_TAG, RUNNER_PID_TAG = "qlora/host", "qlora/pid"


def runner_tags() -> dict[str, str]:
    """Tags that let a later run on this machine tell whether this run's process is still alive."""
    return {RUNNER_HOST_TAG: socket.gethostname(), RUNNER_PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(instance: dg.DagsterInstance, log=print) -> list[str]:
    """Mark this machine's in-process runs whose process died (SIGKILL, out of memory) as failed and free
    their `gpu` pool slots, which a dead process never gives back. The daemon does this for UI runs."""
    records = instance.get_run_records(filters=dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
        tags={RUNNER_HOST_TAG: socket.gethostname()}))
    reaped = []
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(RUNNER_PID_TAG, "0"))
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, message=f"the process running it (pid {pid}) is gone: killed or crashed")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            log(f"run {run.run_id} died with its process (pid {pid}); marked failed, its pool slots freed")
            reaped.append(run.run_id)
    return reaped
