"""The whole graph on the embedded default through the headless runner, as `make demo` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from pipelines import run

pytestmark = pytest.mark.slow


def small_demo_config(tmp_path: Path) -> Path:
    """configs/demo.yaml with fewer steps and generations, so the test takes seconds, not minutes."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    config["ops"]["qlora_adapter"]["config"].update(max_steps=8, save_steps=4, logging_steps=4)
    config["ops"]["adapter_evaluation"]["config"].update(num_generation_examples=8, max_new_tokens=8)
    path = tmp_path / "demo-small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_demo_pipeline_registers_a_loadable_model_and_reruns_from_cache(tmp_path, qlora_home, capsys):
    config = small_demo_config(tmp_path)
    assert run.main([str(config)]) == 0
    out = capsys.readouterr().out
    assert "| eval_loss |" in out
    last = out.strip().splitlines()[-1]
    assert last == "model_uri: models:/qlora-demo/1"

    # A fresh process, outside the repository, with only the tracking URI: the registered model generates text.
    code = (
        "import json, mlflow; m = mlflow.pyfunc.load_model('models:/qlora-demo/1'); "
        "print(json.dumps(m.predict([{'instruction': 'Give the first word.', 'input': 'quick brown fox'}, "
        "{'instruction': 'How many words are there?', 'input': 'red sky'}])))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{qlora_home / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    generations = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(generations) == 2 and all(isinstance(g, str) for g in generations)

    # Nothing changed: every step is a cache hit and nothing new is registered.
    assert run.main([str(config)]) == 0
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.split(" ")[0] in {
        "training_dataset", "quantized_base_model", "qlora_adapter", "adapter_evaluation", "registered_adapter"}]
    assert len(steps) == 5 and all("cache hit" in line for line in steps), steps


def test_runner_reports_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  qlora_adapter:\n    config:\n      learning_rate: -1\n")
    assert run.main([str(bad)]) != 0
    err = capsys.readouterr().err
    assert "learning_rate must be > 0, got -1" in err


def test_workspace_loads_the_five_assets():
    proc = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from pipelines.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"training_dataset", "quantized_base_model", "qlora_adapter", "adapter_evaluation", "registered_adapter"}


def test_runner_names_an_unknown_key_in_a_config_file(tmp_path, capsys):
    bad = tmp_path / "typo.yaml"
    bad.write_text("ops:\n  qlora_adapter:\n    config:\n      lora_rank: 8\n")
    assert run.main([str(bad)]) == 2
    assert "ops.qlora_adapter.config.lora_rank: unknown key; valid keys: alpha, batch_size" in capsys.readouterr().err
