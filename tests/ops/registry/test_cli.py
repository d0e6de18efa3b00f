"""The `qlora` CLI against the embedded sqlite registry of a data home, with a real tiny adapter registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.core.paths import REPO_ROOT, default_tracking_uri
from ops.registry.cli import build_parser, generation_requests, main
from ops.registry.lookup import LookupFailed, ModelRef, parse_ref, table
from ops.registry.register import register_adapter
from ops.registry.spec import RegistrySpec
from tests.tiny import write_tiny_report

LINEAGE = {"dataset_fingerprint": "d" * 16, "base_model_id": "embedded:tiny-llama", "base_model_revision": "abc"}


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_quantized, tiny_adapter) -> Path:
    """A data home whose default registry holds `tiny` version 1 with alias `candidate`."""
    home = tmp_path_factory.mktemp("cli-home")
    report = home / "report.json"
    write_tiny_report(report)
    register_adapter(tracking_uri=default_tracking_uri(home), registry_uri=None, artifact_location=None,
                     experiment="cli-test", spec=RegistrySpec(model_name="tiny", alias="candidate"),
                     adapter_dir=tiny_adapter[0] / "adapter", base_model_dir=tiny_quantized[0] / "model",
                     prompt_format="alpaca", params={"train": {"r": 8}}, report_path=report, tags=LINEAGE,
                     metrics={"tuned": {"eval_loss": 2.5, "exact_match": 0.25}}, log=lambda _: None)
    return home


@pytest.fixture
def cli(home, monkeypatch, capsys):
    """Run `qlora ARGS` in-process against `home`: (exit status, stdout, stderr)."""
    monkeypatch.setenv("QLORA_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # main() exports it for pyfunc loading
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_models_lists_registered_models(cli):
    code, out, _ = cli("models")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["name", "latest_version", "aliases", "updated"]
    assert row.split()[:2] == ["tiny", "1"] and "candidate=1" in row.split()[2]  # the gate may add champion


def test_model_versions_table_and_json(cli):
    code, out, _ = cli("models", "tiny")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:5] == ["version", "aliases", "tuned.eval_loss", "tuned.exact_match",
                                                  "base_model"]
    cells = lines[1].split()
    assert cells[0] == "1" and "candidate" in cells[1] and cells[2:6] == ["2.5", "0.25", "embedded:tiny-llama", "d" * 16]
    assert lines[0].index("base_model") == lines[1].index("embedded:")  # aligned columns
    code, out, _ = cli("models", "tiny", "--json")
    (row,) = json.loads(out)
    assert "candidate" in row["aliases"] and row["tuned.eval_loss"] == 2.5 and row["dataset"] == "d" * 16


def test_show_prints_lineage_params_and_metrics(cli):
    code, out, _ = cli("show", "tiny@candidate")
    assert code == 0
    assert "base_model_revision" in out and "train.r" in out and "tuned.exact_match" in out
    code, out, _ = cli("show", "tiny/1", "--json")
    details = json.loads(out)
    assert details["version"] == 1 and details["tags"]["dataset_fingerprint"] == "d" * 16
    assert details["params"]["train.r"] == "8" and details["metrics"]["tuned.eval_loss"] == 2.5


def test_show_cuts_long_values_of_older_registrations_to_one_short_line(cli, home):
    """Versions registered before checksums became an artifact carry them as one long JSON tag."""
    from mlflow import MlflowClient

    long_tag = json.dumps({f"file{i}.safetensors": "0" * 64 for i in range(20)})
    MlflowClient(default_tracking_uri(home)).set_model_version_tag("tiny", "1", "legacy_sha256", long_tag)
    code, out, _ = cli("show", "tiny/1")
    (line,) = [line for line in out.splitlines() if "legacy_sha256" in line]
    assert code == 0 and len(line.strip()) < 140 and f"({len(long_tag):,} characters)" in line
    code, out, _ = cli("show", "tiny/1", "--json")
    assert json.loads(out)["tags"]["legacy_sha256"] == long_tag


def test_generate_prints_one_line_per_prompt(cli):
    code, out, err = cli("generate", "tiny@candidate", "Give the first word.", "--input", "quick brown fox",
                         "--max-new-tokens", "3", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["prompt"] == "Give the first word." and row["input"] == "quick brown fox"
    assert isinstance(row["generation"], str)
    code, out, err = cli("generate", "tiny@candidate", "Say yes.", "Say no.", "--max-new-tokens", "2")
    assert code == 0, err
    assert [line.split(" ->")[0] for line in out.strip().splitlines()] == ["'Say yes.'", "'Say no.'"]


def test_generate_refuses_fields_the_training_format_did_not_have(cli):
    code, out, err = cli("generate", "tiny@candidate", "Say yes.", "--system", "Be brief.")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("qlora: error: request 1: a model trained on alpaca data does not take system")


@pytest.mark.parametrize("args, message", [
    (["p1", "p2", "p3", "--input", "a", "--input", "b"], "--input was given 2 times for 3 prompts"),
    (["--messages", "[{'role': 'user'}]"], "--messages is not JSON"),
    (["--messages", '{"role": "user", "content": "x"}'], "--messages must be a JSON list"),
    ([], "nothing to generate"),
])
def test_generation_requests_name_the_bad_argument(args, message):
    with pytest.raises(LookupFailed, match=message):
        generation_requests(build_parser().parse_args(["generate", "m@a", *args]))


def test_generation_requests_pair_inputs_and_add_system_and_conversations():
    args = build_parser().parse_args(["generate", "m@a", "Count.", "Name.", "--input", "a b", "--input", "c",
                                      "--system", "S", "--messages", '[{"role": "user", "content": "hi"}]'])
    assert generation_requests(args) == [{"prompt": "Count.", "input": "a b", "system": "S"},
                                         {"prompt": "Name.", "input": "c", "system": "S"},
                                         {"messages": [{"role": "user", "content": "hi"}], "system": "S"}]
    shared = build_parser().parse_args(["generate", "m@a", "Count.", "Name.", "--input", "a b"])
    assert [r["input"] for r in generation_requests(shared)] == ["a b", "a b"]


@pytest.mark.parametrize("args, message", [
    (("models", "nope"), "no registered model named 'nope'"),
    (("show", "nope@candidate"), "no registered model named 'nope'"),
    (("show", "tiny@staging"), "model 'tiny' has no alias 'staging' (aliases: candidate"),
    (("show", "tiny/9"), "model 'tiny' has no version 9"),
    (("show", "tiny"), "'tiny' is not NAME@ALIAS or NAME/VERSION"),
])
def test_errors_are_one_line(cli, args, message):
    code, out, err = cli(*args)
    assert code == 1 and out == ""
    assert err.startswith(f"qlora: error: {message}") and err.count("\n") == 1


def test_missing_registry_is_an_error_not_a_new_database(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_HOME", str(tmp_path / "empty"))
    assert main(["models"]) == 1 and not (tmp_path / "empty" / "mlflow.db").exists()


@pytest.mark.slow  # starts a subprocess
def test_unreachable_server_fails_fast_in_one_line(tmp_path):
    """The console script's module in a fresh process, as a user runs it: no traceback, seconds not minutes.
    (`python -m`, not the `qlora` script: an installed script may come from another checkout.)"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "PYTHONPATH": str(REPO_ROOT)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ops.registry.cli", "models"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["qlora: error: tracking server http://127.0.0.1:9 does not answer "
                                                "(ConnectionRefusedError)"]
    assert time.monotonic() - started < 20


def test_parse_ref_and_table():
    assert parse_ref("a/b@prod") == ModelRef("a/b", alias="prod")
    assert parse_ref("m/12").uri == "models:/m/12"
    with pytest.raises(LookupFailed):
        parse_ref("m@")
    assert table([{"a": 1, "bb": None}, {"a": 22, "bb": 0.5}]) == "a   bb\n1   -\n22  0.5"
