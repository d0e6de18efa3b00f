"""Two pipeline runs at once: shared steps are computed safely, and `gpu` pool steps never overlap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.instance import dagster_home
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow
GPU_STEPS = ("qlora_adapter", "adapter_evaluation")


def write_config(path: Path, base_dir: Path, learning_rate: float) -> Path:
    path.write_text(yaml.safe_dump(tiny_run_config(
        "two-runs", base_dir, data={"max_seq_len": 48}, evaluation={"num_generation_examples": 2, "max_new_tokens": 2},
        train={"max_steps": 12, "batch_size": 4, "learning_rate": learning_rate, "logging_steps": 4, "save_steps": 6,
               "warmup_steps": 30})))
    return path


def gpu_step_windows(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float]]:
    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key not in GPU_STEPS:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[event.step_key] = entry.timestamp
    return [(starts[k], ends[k]) for k in GPU_STEPS]


def test_two_runs_at_once_share_the_gpu_pool_one_step_at_a_time(tiny_base_dir, qlora_home, tmp_path):
    env = {**os.environ, "QLORA_HOME": str(qlora_home)}
    configs = [write_config(tmp_path / f"run{i}.yaml", tiny_base_dir, lr) for i, lr in enumerate((1e-3, 2e-3))]
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.run", str(c)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in configs]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)

    os.environ["QLORA_HOME"] = str(qlora_home)  # the instance both runs used
    instance = dg.DagsterInstance.from_config(str(dagster_home()))
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    assert len(runs) == 2
    windows = sorted(w for run in runs for w in gpu_step_windows(instance, run.run_id))
    for (_, end), (next_start, _) in zip(windows, windows[1:]):
        assert next_start >= end, f"two gpu-pool steps overlapped: {windows}"
    assert sorted(line for o in outputs for line in o.splitlines() if line.startswith("model_uri:")) == [
        "model_uri: models:/two-runs/1", "model_uri: models:/two-runs/2"]  # each run names its own version
