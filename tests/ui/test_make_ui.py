"""`make ui` stops when asked: Ctrl-C in its terminal (SIGINT to the foreground process group) or `kill <make's pid>`
(SIGTERM to make, which forwards it to its recipe's command)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from ops.core.paths import REPO_ROOT
from tests import dagster_dev as dev

pytestmark = pytest.mark.slow

# dagster dev waits up to 60 s for its webserver and daemon before killing them; a clean stop took 25-30 s on
# a 2-core machine running other builds (most of it interpreter shutdown of the four processes).
STOP_WITHIN_S = 60


def start_make_ui(tmp_path, qlora_home) -> tuple[subprocess.Popen, int]:
    """`make ui` on a free port, in its own process group as a terminal's foreground job is; (make, port)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on PATH")
    venv = dev.BIN.parent
    port = dev.free_port()
    env = {**os.environ, **dev.QUIET_ENV, "QLORA_HOME": str(qlora_home), "DAGSTER_HOME": str(dev.dagster_home(tmp_path))}
    log = (tmp_path / "make-ui.log").open("w")
    # -o: never (re)install into the running venv; this test is about the ui recipe.
    proc = subprocess.Popen([make, "-C", str(REPO_ROOT), "ui", "-o", f"{venv}/.installed", f"VENV={venv}",
                             f"BIN={dev.BIN}", f"UI_PORT={port}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, port


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_make_ui_stops_and_leaves_no_process(how, tmp_path, qlora_home):
    proc, port = start_make_ui(tmp_path, qlora_home)
    try:
        dev.wait_for("make ui's GraphQL endpoint", lambda: proc.poll() is None and dev.graphql(port, "{ version }"), 240)
        started = time.monotonic()
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            proc.send_signal(signal.SIGTERM)  # `kill <pid of make>`
        dev.wait_for("every process of make ui to end", lambda: not dev.group_members(proc.pid), STOP_WITHIN_S, 0.5)
        took = time.monotonic() - started
        print(f"make ui stopped {took:.1f}s after {how}")
    finally:
        if dev.group_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
