"""Against real servers on loopback: an `mlflow server` registry, the `qlora` CLI, and `mlflow models serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ops.registry import register_adapter
from ops.specs import RegistrySpec

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
PROMPT = "Give the first word.\nquick brown fox"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll `url`/health until it answers 200; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s}s")


def start(cmd: list[str], url: str, log: Path, env: dict, timeout_s: float) -> subprocess.Popen:
    # Its own session, so teardown can end the server and the workers it forks, and nothing else.
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_healthy(url, proc, timeout_s)
    except Exception:
        stop(proc)
        raise RuntimeError(f"{' '.join(cmd[:3])} did not start: {log.read_text()[-2000:]}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_quantized, tiny_adapter):
    """A real tracking server (sqlite backend, proxied artifacts) holding `tiny-served`@candidate."""
    root = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = start([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                  "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
                  "--port", url.rsplit(":", 1)[1], "--workers", "1"], url, root / "server.log", env, 90)
    try:
        report = root / "report.json"
        report.write_text("{}")
        register_adapter(tracking_uri=url, registry_uri=None, artifact_location=None, experiment="serving",
                         spec=RegistrySpec(model_name="tiny-served", alias="candidate"),
                         adapter_dir=tiny_adapter[0] / "adapter", base_model_dir=tiny_quantized[0] / "model",
                         prompt_format="alpaca", params={}, report_path=report,
                         metrics={"tuned": {"eval_loss": 2.0, "exact_match": 0.5}},
                         tags={"dataset_fingerprint": "f" * 16, "base_model_id": "embedded:tiny-llama"},
                         log=lambda _: None)
        yield {"url": url, "root": root, "env": {**env, "MLFLOW_TRACKING_URI": url}}
    finally:
        stop(proc)


def qlora(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qlora"), *args], env=server["env"], capture_output=True, text=True,
                          timeout=120, cwd=server["root"])


def test_cli_against_the_server(server):
    proc = qlora(server, "models", "tiny-served", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(proc.stdout)
    assert row["tuned.exact_match"] == 0.5 and row["dataset"] == "f" * 16
    shown = qlora(server, "show", "tiny-served@candidate")
    assert shown.returncode == 0 and "dataset_fingerprint" in shown.stdout
    gen = qlora(server, "generate", "tiny-served@candidate", PROMPT, "--max-new-tokens", "3", "--json")
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert isinstance(json.loads(gen.stdout)[0]["generation"], str)
    missing = qlora(server, "show", "tiny-served@nope")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


LOAD = """
import json, sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/tiny-served@candidate")
from_frame = model.predict(pd.DataFrame({"prompt": [sys.argv[1], sys.argv[1]]}), params={"max_new_tokens": 3})
from_list = model.predict([sys.argv[1]], params={"max_new_tokens": 3})
print(json.dumps({"frame": list(from_frame), "list": list(from_list)}))
"""


def test_pyfunc_loads_from_the_server_in_another_process(server, tmp_path):
    env = {k: v for k, v in server["env"].items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", LOAD, PROMPT], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["frame"]) == 2 and out["frame"][0] == out["list"][0]  # a `prompt` column is the same prompt


def test_models_serve_answers_invocations(server, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([str(BIN / "mlflow"), "models", "serve", "-m", "models:/tiny-served@candidate", "--env-manager",
                  "local", "--host", "127.0.0.1", "-p", str(port), "-w", "1"], url, tmp_path / "serve.log",
                 {**server["env"], "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}, 120)
    try:
        for body in ({"inputs": [PROMPT], "params": {"max_new_tokens": 3}},
                     {"dataframe_split": {"columns": ["prompt"], "data": [[PROMPT]]}, "params": {"max_new_tokens": 3}}):
            request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as resp:
                predictions = json.loads(resp.read())["predictions"]
            assert len(predictions) == 1 and isinstance(predictions[0], str)
    finally:
        stop(proc)
