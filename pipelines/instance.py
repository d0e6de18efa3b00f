"""The Dagster instance: $DAGSTER_HOME when set, else `$QLORA_HOME/dagster` with the project's dagster.yaml; or the
instance file named by $QLORA_INSTANCE (deploy/dagster.yaml: PostgreSQL storage shared by every runner)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import dagster as dg

from ops.core.locks import file_lock
from ops.core.paths import REPO_ROOT, qlora_home

INSTANCE_TEMPLATE = REPO_ROOT / "dagster.yaml"
INSTANCE_ENV = "QLORA_INSTANCE"  # an instance file used in place of $DAGSTER_HOME/dagster.yaml (deploy/dagster.yaml)


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or qlora_home() / "dagster").resolve()


def instance_file() -> Path | None:
    """The instance file $QLORA_INSTANCE names (relative to the working directory, else to the repository), or None.

    Raises:
        FileNotFoundError: $QLORA_INSTANCE names no file.
    """
    value = os.environ.get(INSTANCE_ENV)
    if not value:
        return None
    for path in (Path(value), REPO_ROOT / value):
        if path.is_file():
            return path.resolve()
    raise FileNotFoundError(f"{INSTANCE_ENV}={value}: no such instance file (e.g. {INSTANCE_ENV}=deploy/dagster.yaml)")


class UnsetVariables(RuntimeError):
    """An instance file reads environment variables (`{env: NAME}`) that are not set."""


def unset_variables(path: Path) -> list[str]:
    """The environment variables an instance file reads (`{env: NAME}`) that are not set, in file order."""
    import yaml

    def names(node) -> list[str]:
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                return [node["env"]]
            return [n for value in node.values() for n in names(value)]
        return [n for value in node for n in names(value)] if isinstance(node, list) else []

    return [n for n in dict.fromkeys(names(yaml.safe_load(path.read_text()) or {})) if n not in os.environ]


def instance_from_file(path: Path, home: Path) -> dg.DagsterInstance:
    """The instance that `path` describes; what it leaves local (artifacts, compute logs) goes under `home`.

    Raises:
        UnsetVariables: the file reads environment variables that are not set (Dagster's own error for that is
            several hundred characters that never name the variable).
    """
    missing = unset_variables(path)
    if missing:
        raise UnsetVariables(f"{path.name} reads {', '.join(missing)} from the environment, and "
                                f"{'it is' if len(missing) == 1 else 'they are'} not set")
    # Dagster's public constructors read dagster.yaml from the local home itself; InstanceRef takes them apart.
    from dagster._core.instance.ref import InstanceRef

    home.mkdir(parents=True, exist_ok=True)
    ref = InstanceRef.from_dir(str(home), config_dir=str(path.parent), config_filename=path.name)
    return dg.DagsterInstance.from_ref(ref)


def get_instance() -> dg.DagsterInstance:
    """A persistent instance, so runs and materializations outlive the process and show in the UI: the file
    $QLORA_INSTANCE names when set, else $DAGSTER_HOME/dagster.yaml (copied from the project's on first use)."""
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    shared = instance_file()
    # Two runners starting at once on a fresh home would both create the sqlite schemas and corrupt their
    # migration history ("more than one head"); the first creates them while the second waits.
    with file_lock(home / ".init.lock"):
        config = home / "dagster.yaml"
        if shared is None and not config.exists() and INSTANCE_TEMPLATE.exists():
            shutil.copy(INSTANCE_TEMPLATE, config)
        instance = instance_from_file(shared, home) if shared else dg.DagsterInstance.get()
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
