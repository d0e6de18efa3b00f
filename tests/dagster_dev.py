"""Helpers for tests that start real servers (`dagster dev`, the MLflow UI) on loopback and talk to them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ops.core.paths import REPO_ROOT

BIN = Path(sys.executable).parent
# Hubs are unreachable in tests; one thread per process on a shared 2-core machine (see tests/conftest.py).
QUIET_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """POST one GraphQL query to the webserver on `port`; returns its `data` (asserts there were no errors)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        if err.code != 500:
            raise
        # The webserver answers 500 when a field resolved to a PythonError (e.g. a refused launch); the UI reads the
        # data all the same (ui-core/src/app/AppError.tsx).
        answer = json.loads(err.read())
    assert "errors" not in answer, answer
    return answer["data"]


def wait_for(what: str, probe, timeout_s: float, every_s: float = 2.0):
    """Call `probe` until it returns something truthy (OSError counts as not yet); AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError:  # the server is still starting
            value = None
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def dagster_home(tmp_path: Path) -> Path:
    """A fresh instance directory with the project's dagster.yaml."""
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Signal the process group `proc` leads; SIGKILL it after timeout_s."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def group_members(pgid: int) -> list[str]:
    """The command lines of live processes in process group `pgid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
                found.append((entry / "cmdline").read_text().replace("\0", " ")[:120])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
    return found


@contextmanager
def dagster_dev(tmp_path: Path, env: dict[str, str], timeout_s: float = 240) -> Iterator[dict]:
    """`dagster dev -w workspace.yaml` on a free loopback port in its own process group, stopped on exit.

    Args:
        tmp_path: where its log (dagster-dev.log) is written.
        env: extra environment (DAGSTER_HOME, QLORA_HOME, ...), over os.environ and QUIET_ENV.
        timeout_s: how long the GraphQL endpoint may take to answer (about 2 minutes on a loaded 2-core machine).

    Yields:
        {"port": int, "log": Path, "proc": Popen}.
    """
    port = free_port()
    log_path = tmp_path / "dagster-dev.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                cwd=REPO_ROOT, env={**os.environ, **QUIET_ENV, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for("the GraphQL endpoint", lambda: proc.poll() is None and graphql(port, "{ version }")["version"],
                     timeout_s)
            yield {"port": port, "log": log_path, "proc": proc}
        finally:
            stop_group(proc)  # dagster dev, its code servers and daemon share the group


REPOSITORY = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"


def repository_selector(port: int) -> dict:
    """{repositoryName, repositoryLocationName} of the one code location."""
    repo = graphql(port, REPOSITORY)["repositoriesOrError"]["nodes"][0]
    return {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]}


LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def launch_run(port: int, job: str, run_config: dict) -> dict:
    """Launch `job` with `run_config` through GraphQL (what the launchpad's Launch button sends).

    Returns:
        the launchRun answer: {"__typename": "LaunchRunSuccess", "run": {"runId": ...}} or the refusal.
    """
    params = {"selector": {**repository_selector(port), "jobName": job}, "runConfigData": run_config}
    return graphql(port, LAUNCH, {"p": params})["launchRun"]


def wait_for_run(port: int, run_id: str, timeout_s: float, log: Path) -> None:
    """Poll the run until it succeeds; AssertionError naming the log when it fails or times out."""

    def finished():
        status = graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        assert status not in ("FAILURE", "CANCELED"), f"run {run_id} ended {status}; see {log} and the run's logs"
        return status == "SUCCESS"

    wait_for(f"run {run_id} to succeed", finished, timeout_s, every_s=3)


@contextmanager
def mlflow_ui(tmp_path: Path, tracking_uri: str, timeout_s: float = 120) -> Iterator[int]:
    """`mlflow server` on a free loopback port over `tracking_uri` (one worker); yields its port."""
    port = free_port()
    log_path = tmp_path / "mlflow-server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", tracking_uri,
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                cwd=tmp_path, env={**os.environ, **QUIET_ENV}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_for("the MLflow server", lambda: proc.poll() is None and urllib.request.urlopen(
                f"http://127.0.0.1:{port}/health", timeout=5).status == 200, timeout_s)
            yield port
        finally:
            stop_group(proc, timeout_s=15)
