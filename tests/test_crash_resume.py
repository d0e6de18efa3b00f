"""A training run killed with SIGKILL resumes from its newest complete checkpoint and loses at most one interval."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines import run
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow

MAX_STEPS, SAVE_STEPS, KILL_AFTER = 200, 10, 30


def write_config(path: Path, base_dir: Path) -> Path:
    config = tiny_run_config("crash-test", base_dir, data={"max_rows": 200},
                             train={"max_steps": MAX_STEPS, "batch_size": 4, "save_steps": SAVE_STEPS, "warmup_steps": 2},
                             evaluation={"num_generation_examples": 2, "max_new_tokens": 2})
    path.write_text(yaml.safe_dump(config))
    return path


def complete_checkpoint(home: Path, step: int) -> bool:
    return any(home.glob(f"artifacts/qlora_adapter/.work-*/checkpoint-{step}/trainer_state.json"))


def test_sigkill_during_training_resumes_from_the_newest_checkpoint(tiny_base_dir, qlora_home, tmp_path, capfd):
    config = write_config(tmp_path / "crash.yaml", tiny_base_dir)
    log = tmp_path / "killed.log"
    env = {**os.environ, "QLORA_HOME": str(qlora_home)}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.run", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        deadline = time.time() + 240
        while not complete_checkpoint(qlora_home, KILL_AFTER) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    trained = [int(m) for m in re.findall(rf"step (\d+)/{MAX_STEPS}", log.read_text())]
    assert trained and trained[-1] < MAX_STEPS, "the run finished before it could be killed"
    assert not any((qlora_home / "artifacts" / "qlora_adapter").glob("[0-9a-f]*")), "a killed run left a finished artifact"

    assert run.main([str(config)]) == 0
    out = capfd.readouterr()  # the runner writes its lines to a copy of fd 2 (the terminal), not to sys.stderr
    resumed = re.search(r"resuming from checkpoint-(\d+)", out.out + out.err)
    assert resumed, "the rerun did not resume"
    resumed_step = int(resumed.group(1))
    summary = json.loads(next((qlora_home / "artifacts" / "qlora_adapter").glob("*/train_summary.json")).read_text())
    assert summary["steps"] == MAX_STEPS and summary["resumed_from_step"] == resumed_step
    lost = trained[-1] - resumed_step  # steps trained before the kill that were trained again
    assert resumed_step >= KILL_AFTER and 0 <= lost <= SAVE_STEPS, (trained[-1], resumed_step)
    print(f"killed at step {trained[-1]}, resumed from {resumed_step}: {lost} steps trained twice")


def test_a_half_written_checkpoint_is_never_resumed_from(tmp_path):
    from ops.train.trainer import latest_checkpoint

    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"global_step": 10}))
    (tmp_path / "checkpoint-20").mkdir()  # killed mid-write: weights there, trainer state cut off
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_step": 2')
    (tmp_path / "checkpoint-30").mkdir()  # killed before the trainer state was written at all
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
