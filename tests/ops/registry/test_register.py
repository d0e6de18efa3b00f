"""Registration against a real embedded MLflow (sqlite) with a real tiny 4-bit base and LoRA adapter."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from peft import LoraConfig, get_peft_model

from ops.evaluation.report import write_report
from ops.registry.aliases import check_alias
from ops.registry.register import find_version_by_tag, register_adapter
from ops.registry.spec import RegistrySpec
from ops.registry.tracking import default_artifact_location, start_run
from ops.train.loss_curve import plot_loss_curve
from tests.tiny import quantize_fp32, tiny_report

SPEC = RegistrySpec(model_name="tiny-adapter", alias="candidate")
REPORT = tiny_report()
EXPERIMENT = "qlora-test"
LINEAGE = {"dataset_fingerprint": "d" * 16, "base_model_id": "embedded:tiny-llama", "base_model_revision": "abc123",
           "code_version": "1", "dagster_run_id": "run-1", "adapter_fingerprint": "a" * 16}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_base_dir) -> tuple[Path, Path]:
    """A saved NF4 double-quantized tiny Llama with its tokenizer, and a LoRA adapter on all its linear layers."""
    root = tmp_path_factory.mktemp("models")
    base_dir, adapter_dir = root / "base-4bit", root / "adapter"
    model = quantize_fp32(tiny_base_dir, base_dir)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(adapter_dir)
    return base_dir, adapter_dir


@pytest.fixture(scope="module")
def registry(tmp_path_factory, model_dirs) -> dict:
    """Two registrations: a fresh run, then a run that 'training' created and logged loss to."""
    home = tmp_path_factory.mktemp("mlflow")
    base_dir, adapter_dir = model_dirs
    report = write_report(REPORT, home / "evaluation.json")
    uri = f"sqlite:///{home}/mlflow.db"
    common = dict(tracking_uri=uri, registry_uri=None, artifact_location=str(home / "artifacts"), experiment=EXPERIMENT, spec=SPEC,
                  adapter_dir=adapter_dir, base_model_dir=base_dir, prompt_format="alpaca", report_path=report,
                  log=lambda msg: None)
    first = register_adapter(**common, params={"train": {"r": 4, "target_modules": ["all-linear"]}},
                             loss_curve=plot_loss_curve([(10, 6.0), (20, 4.5), (30, 3.9)], home / "loss_curve.png"),
                             metrics={"eval_loss": 1.5, "exact_match": 0.25}, tags=LINEAGE)
    training_run = start_run(uri, EXPERIMENT, "train", params={"train": {"r": 4}},
                             artifact_location=str(home / "artifacts"))
    MlflowClient(uri).log_metric(training_run, "train_loss", 2.0, step=10)
    second = register_adapter(**common, params={"train": {"r": 4}, "seed": 1}, metrics={"eval_loss": 1.2},
                              tags={**LINEAGE, "dagster_run_id": "run-2"}, run_id=training_run)
    return {"home": home, "uri": uri, "first": first, "second": second, "training_run": training_run,
            "client": MlflowClient(uri, registry_uri=uri)}


def test_first_registration_is_version_one_with_lineage(registry, model_dirs):
    first, client = registry["first"], registry["client"]
    assert first.version == 1
    assert first.model_uri == "models:/tiny-adapter/1" and first.alias_uri == "models:/tiny-adapter@candidate"
    mv = client.get_model_version(SPEC.model_name, "1")
    assert mv.status == "READY"
    assert {k: mv.tags[k] for k in LINEAGE} == LINEAGE
    assert mv.run_id == first.run_id


def test_checksums_are_one_run_artifact_and_a_short_digest_tag(registry, model_dirs, tmp_path):
    """Not params, not a long tag: MLflow logs model_config keys as params, so the config holds a digest only."""
    client, run_id = registry["client"], registry["first"].run_id
    local = Path(client.download_artifacts(run_id, "adapter_checksums.json", str(tmp_path)))
    checksums = json.loads(local.read_text())
    assert set(checksums) >= {"adapter_model.safetensors", "adapter_config.json"}
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    tags = client.get_model_version(SPEC.model_name, "1").tags
    assert tags["adapter_digest"] == digest[:16] and "adapter_sha256" not in tags
    params = client.get_run(run_id).data.params
    assert params["adapter_checksums_sha256"] == digest
    assert not [k for k in params if "safetensors" in k or "adapter_sha256" in k], sorted(params)
    assert max(len(v) for v in params.values()) <= 100 and max(len(v) for v in tags.values()) <= 100


def test_run_has_params_metrics_report_and_artifacts_under_location(registry):
    client, run_id = registry["client"], registry["first"].run_id
    run = client.get_run(run_id)
    assert run.data.params["train.r"] == "4"
    assert run.data.params["prompt_format"] == "alpaca"  # MLflow logs model_config as params too
    assert run.data.metrics == {"eval_loss": 1.5, "exact_match": 0.25}
    assert run.data.tags["dataset_fingerprint"] == LINEAGE["dataset_fingerprint"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "evaluation")) == [
        "evaluation/evaluation.json", "evaluation/report.md", "evaluation/samples.json"]
    assert str(registry["home"] / "artifacts") in run.info.artifact_uri  # the sqlite store keeps a bare path


def test_run_carries_the_report_as_markdown_the_samples_as_a_table_and_the_loss_curve(registry, tmp_path):
    import pandas as pd
    from PIL import Image

    client, run_id = registry["client"], registry["first"].run_id
    report_md = Path(client.download_artifacts(run_id, "evaluation/report.md", str(tmp_path))).read_text()
    assert "| eval_loss | 1.5000 | 1.5000 |" in report_md and "| Name a colour. | red | blue | red |" in report_md
    table = json.loads(Path(client.download_artifacts(run_id, "evaluation/samples.json", str(tmp_path))).read_text())
    assert pd.DataFrame(table["data"], columns=table["columns"]).to_dict("records") == REPORT.samples
    with Image.open(client.download_artifacts(run_id, "loss_curve.png", str(tmp_path))) as picture:
        assert picture.format == "PNG" and picture.width >= 600
    # the second registration had no loss curve: no picture rather than an empty one
    assert "loss_curve.png" not in [a.path for a in client.list_artifacts(registry["second"].run_id)]


def test_second_registration_moves_alias_and_reuses_training_run(registry):
    client, second = registry["client"], registry["second"]
    assert second.version == 2
    assert int(client.get_model_version_by_alias(SPEC.model_name, SPEC.alias).version) == 2
    assert client.get_model_version(SPEC.model_name, "1").aliases == []
    assert second.run_id == registry["training_run"]
    assert client.get_run(second.run_id).info.status == "FINISHED"
    run = client.get_run(second.run_id)
    assert run.data.metrics["train_loss"] == 2.0 and run.data.metrics["eval_loss"] == 1.2
    assert run.data.params["seed"] == "1"


def test_registration_leaves_the_global_mlflow_uris_alone(registry):
    assert registry["uri"] not in (os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))


def test_find_version_by_tag(registry):
    client = registry["client"]
    assert find_version_by_tag(client, SPEC.model_name, "dagster_run_id", "run-2").version == 2
    assert find_version_by_tag(client, SPEC.model_name, "adapter_fingerprint", "a" * 16).version == 2  # newest
    assert find_version_by_tag(client, SPEC.model_name, "dagster_run_id", "it's-missing") is None
    client.set_model_version_tag(SPEC.model_name, "1", "note", "it's quoted")  # the filter language has no escapes
    assert find_version_by_tag(client, SPEC.model_name, "note", "it's quoted").version == 1


def test_default_artifact_location_sits_next_to_the_sqlite_db(tmp_path):
    assert default_artifact_location(f"sqlite:///{tmp_path}/mlflow.db") == str(tmp_path / "mlflow-artifacts")
    assert default_artifact_location("http://mlflow:5000") is None


def test_model_that_cannot_serve_is_not_registered(registry, model_dirs, tmp_path):
    broken = tmp_path / "not-an-adapter"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    spec = RegistrySpec(model_name="broken-adapter", alias="candidate")
    report = write_report(REPORT, tmp_path / "report.json")
    with pytest.raises(RuntimeError, match="failed to predict"):
        register_adapter(tracking_uri=registry["uri"], registry_uri=None, artifact_location=None, experiment=EXPERIMENT, spec=spec,
                         adapter_dir=broken, base_model_dir=model_dirs[0], prompt_format="text", params={},
                         metrics={}, report_path=report, tags={}, log=lambda msg: None)
    assert registry["client"].search_model_versions("name = 'broken-adapter'") == []


@pytest.mark.parametrize("alias", ["latest", "LATEST", "v3", "V12"])
def test_reserved_aliases_are_rejected(alias):
    with pytest.raises(ValueError, match="reserved"):
        check_alias(alias)


SERVE = """
import json, sys, mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict([{"instruction": "Give the first word.", "input": "quick brown fox"}], params={"max_new_tokens": 4})
inner = model.unwrap_python_model()
print(json.dumps({"out": out, "code": sys.modules[type(inner).__module__].__file__, "format": inner.prompt_format,
                  "model": type(inner.model).__name__, "ops_loaded": "ops" in sys.modules}))
"""


@pytest.mark.slow  # starts a subprocess
def test_alias_loads_and_predicts_in_a_fresh_process(registry, tmp_path):
    """Only the venv: no PYTHONPATH, cwd outside the repo; the code comes from the model's own package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_REGISTRY_URI")}
    env["MLFLOW_TRACKING_URI"] = registry["uri"]
    proc = subprocess.run([sys.executable, "-c", SERVE, registry["second"].alias_uri], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result["out"], list) and len(result["out"]) == 1 and isinstance(result["out"][0], str)
    assert "/code/qlora_model_" in result["code"] and not result["ops_loaded"]  # the logged copy, not the checkout
    assert result["format"] == "alpaca"
    assert result["model"] == "PeftModelForCausalLM"
