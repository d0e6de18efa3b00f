"""MLflow helpers against a real embedded sqlite store: experiments, runs with flattened params, per-step loss."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient
from transformers import TrainerControl, TrainerState

from ops.registry.tracking import (
    MAX_PARAM_CHARS,
    ensure_experiment,
    flatten_params,
    numeric_metrics,
    project_release,
    run_description,
    run_name,
    short_number,
    start_run,
)
from ops.train.callbacks import MlflowLossCallback


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> tuple[str, str]:
    """(tracking URI of a fresh sqlite store, its artifact root); created once, since migrating the schema takes seconds."""
    home = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{home}/mlflow.db", (home / "artifacts").as_uri()


def test_flatten_params_nests_with_dots_and_stringifies():
    params = {"train": {"r": 16, "lora": {"alpha": 32.0}, "targets": ["all-linear"]}, "seed": 0, "note": None}
    assert flatten_params(params) == {
        "train.r": "16", "train.lora.alpha": "32.0", "train.targets": "['all-linear']", "seed": "0", "note": "None"}
    assert flatten_params({}) == {} and flatten_params({"a": {}}) == {}
    assert flatten_params({"x": 1}, prefix="data.") == {"data.x": "1"}


def test_numeric_metrics_keep_numbers_only_under_dotted_names():
    metrics = {"base": {"eval_loss": 2, "note": "x"}, "tuned": {"exact_match": 0.5, "ok": True}, "samples": [1]}
    assert numeric_metrics(metrics) == {"base.eval_loss": 2.0, "tuned.exact_match": 0.5}


def test_flatten_params_cuts_values_to_mlflow_limit():
    long = "x" * (MAX_PARAM_CHARS + 100)
    assert flatten_params({"preview": long}) == {"preview": "x" * MAX_PARAM_CHARS}


def test_ensure_experiment_creates_once_with_its_artifact_location(tracking):
    uri, artifacts = tracking
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("ensure-test") is None
    first = ensure_experiment(client, "ensure-test", artifacts)
    assert ensure_experiment(client, "ensure-test", "file:///elsewhere") == first  # found, not re-created
    experiment = client.get_experiment(first)
    assert experiment.name == "ensure-test" and experiment.artifact_location == artifacts
    assert ensure_experiment(client, "another") != first
    # MLflow 3 opens an experiment on its GenAI traces page unless its kind says model training
    assert experiment.tags["mlflow.experimentKind"] == "finetuning"


def test_ensure_experiment_marks_an_existing_unmarked_experiment(tracking):
    uri, _ = tracking
    client = MlflowClient(uri)
    old = client.create_experiment("made-by-hand")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert ensure_experiment(client, "made-by-hand") == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "finetuning"


def test_run_name_says_what_sets_the_run_apart():
    defaults = {"r": 64, "alpha": 16, "learning_rate": 2e-4, "max_steps": None, "num_epochs": None, "seed": 0,
                "target_modules": ["all-linear"], "dropout": 0.1}
    settings = {**defaults, "r": 16, "max_steps": 600}
    assert run_name(settings, defaults) == "r16-lr2e-4-600steps"
    settings = {**defaults, "num_epochs": 3, "alpha": 32, "seed": 1, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    assert run_name(settings, defaults) == "r64-lr2e-4-3ep-alpha=32-seed=1-target_modules=q_proj+v_proj-..."  # field order
    assert short_number(0.001) == "0.001" and short_number(1e-5) == "1e-5" and short_number(True) == "true"


def test_run_description_lists_changed_settings_and_inputs():
    text = run_description({"r": 16, "seed": 0}, {"r": 64, "seed": 0}, {"dataset": "d" * 16})
    assert "- `r`: 16 (default 64)" in text and "seed" not in text and f"- dataset: `{'d' * 16}`" in text


def test_start_run_logs_flattened_params_and_tags_and_stays_open(tracking):
    uri, artifacts = tracking
    params = {"train": {"r": 16, "learning_rate": 1e-3}, "data": {"source": "bundled"}, "fingerprint": "abcd"}
    run_id = start_run(uri, "runs-test", "adapter-abcd", params, tags={"qlora.fingerprint": "abcd"},
                       artifact_location=artifacts)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.run_name == "adapter-abcd" and run.info.status == "RUNNING"
    assert run.data.params == {"train.r": "16", "train.learning_rate": "0.001", "data.source": "bundled", "fingerprint": "abcd"}
    assert run.data.tags["qlora.fingerprint"] == "abcd"
    second = start_run(uri, "runs-test", "adapter-abcd", params)
    assert second != run_id and MlflowClient(uri).get_run(second).info.experiment_id == run.info.experiment_id


def test_loss_callback_logs_finite_values_per_step(tracking):
    uri, _ = tracking
    run_id = start_run(uri, "loss-test", "loss", {})
    callback = MlflowLossCallback(uri, run_id)
    for step, logs in [(1, {"loss": 6.5, "learning_rate": 1e-3, "grad_norm": 1.2, "epoch": 0.1}),
                       (2, {"loss": float("nan"), "learning_rate": 9e-4, "grad_norm": float("inf")}),
                       (3, {"loss": 5.25})]:
        callback.on_log(None, TrainerState(global_step=step), TrainerControl(), logs=logs)
    callback.on_log(None, TrainerState(global_step=4), TrainerControl(), logs=None)
    client = MlflowClient(uri)
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
               for key in ("train_loss", "train_learning_rate", "train_grad_norm", "train_epoch")}
    assert history["train_loss"] == [(1, 6.5), (3, 5.25)]  # the NaN at step 2 is skipped (the guard reports it)
    assert history["train_learning_rate"] == [(1, 1e-3), (2, 9e-4)]
    assert history["train_grad_norm"] == [(1, 1.2)]
    assert history["train_epoch"] == []
    assert all(math.isfinite(v) for values in history.values() for _, v in values)


def test_code_version_names_the_release_and_commit():
    version = project_release()
    release, _, sha = version.partition("+")
    assert release in ("0.1.0", "unreleased")
    assert sha == "" or (4 <= len(sha) <= 40 and int(sha, 16) >= 0)


def test_a_tracking_server_that_does_not_answer_fails_fast_naming_it_without_credentials():
    import time

    from ops.registry.tracking import TrackingServerUnavailable, check_tracking_server

    started = time.monotonic()
    with pytest.raises(TrackingServerUnavailable, match=r"http://127.0.0.1:9 does not answer") as err:
        check_tracking_server("http://bob:hunter2@127.0.0.1:9", timeout_s=3)
    assert "hunter2" not in str(err.value) and time.monotonic() - started < 10
    check_tracking_server("sqlite:////tmp/never-created.db")  # embedded stores need no server


def test_a_server_reached_through_a_uri_with_credentials_passes_the_health_check():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from ops.registry.tracking import server_problem

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # urllib took "bob:hunter2@127.0.0.1" for a host name: "Name or service not known"
        assert server_problem(f"http://bob:hunter2@127.0.0.1:{server.server_port}", timeout_s=5) is None
    finally:
        server.shutdown()
        server.server_close()
