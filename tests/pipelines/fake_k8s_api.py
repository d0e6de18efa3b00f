"""A stand-in Kubernetes API server on loopback that records what a client asks to create.

dagster-k8s's executor and PipesK8sClient talk to it through the real kubernetes client (a kubeconfig pointing at
http://127.0.0.1:<port>), so a test sees the exact Job or Pod JSON a cluster would receive. By default every create
is answered 403 Forbidden: nothing is scheduled, and the caller fails at once instead of polling for a pod that
never runs. With `kubelet=True` a created pod's (or Job's) first container runs here as a local process (its command
and args, its env, its envFrom resolved from the `secrets` given), and the pod's status and timestamped log and the
Job's status are served the way the API serves them: enough for PipesK8sClient to wait for a pod and read its Pipes
messages, and for the k8s_job_executor to run a step in a Job. Not a cluster: no scheduling, no
images, no volumes, no resource limits; it checks no schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

REFUSAL = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
           "message": "offline test API server: request recorded, nothing created"}


class LocalPod:
    """A pod's first container run as a local process; its output lines timestamped as the kubelet does."""

    def __init__(self, body: dict, secrets: dict[str, dict[str, str]], cwd: Path) -> None:
        self.body = body  # a Pod, or a Job (whose pod template holds the container)
        spec = body["spec"]["template"]["spec"] if body.get("kind") == "Job" else body["spec"]
        container = spec["containers"][0]
        # This interpreter's scripts first: the image's PATH would hold `dagster`.
        env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        for source in container.get("envFrom", []):  # a missing Secret or ConfigMap fails the pod, as in a cluster
            ref = source.get("secretRef") or source.get("configMapRef")
            env.update(secrets[ref["name"]])
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        self.lines: list[str] = []
        self.proc = subprocess.Popen(container.get("command", []) + container.get("args", []), env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            self.lines.append(f"{stamp} {line.rstrip(chr(10))}")

    def log(self, timeout: float = 120) -> str:
        """The whole log, once the container has ended (a `follow` stream ends there too)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=timeout)
        return "".join(f"{line}\n" for line in self.lines)

    def job_with_status(self) -> dict:
        rc = self.proc.poll()
        status = {"active": 1} if rc is None else ({"succeeded": 1} if rc == 0 else {"failed": 1})
        return {**self.body, "status": status}

    def with_status(self) -> dict:
        container = self.body["spec"]["containers"][0]
        rc = self.proc.poll()
        state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if rc is None else \
            {"terminated": {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error"}}
        status = {"phase": "Running" if rc is None else ("Succeeded" if rc == 0 else "Failed"),
                  "containerStatuses": [{"name": container["name"], "image": container.get("image", ""),
                                         "imageID": "", "restartCount": 0, "ready": rc is None, "state": state}]}
        return {**self.body, "status": status}


class FakeK8sApi:
    def __init__(self, kubelet: bool = False, secrets: dict[str, dict[str, str]] | None = None,
                 cwd: Path | None = None) -> None:
        self.requests: list[tuple[str, str, dict | None]] = []  # (method, path, JSON body)
        self.kubelet, self.secrets, self.cwd = kubelet, secrets or {}, cwd or Path.cwd()
        self.pods: dict[str, LocalPod] = {}
        self.jobs: dict[str, LocalPod] = {}

    def created(self, kind_path: str) -> list[dict]:
        """Bodies POSTed to paths ending in `kind_path` ("/jobs", "/pods")."""
        return [body for method, path, body in self.requests if method == "POST" and path.endswith(kind_path)]

    def kubeconfig(self, folder: Path, port: int, namespace: str) -> Path:
        path = folder / "kubeconfig.yaml"
        path.write_text(json.dumps({  # JSON is YAML
            "apiVersion": "v1", "kind": "Config", "current-context": "offline",
            "clusters": [{"name": "offline", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "offline", "user": {"token": "offline-test"}}],
            "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline",
                                                         "namespace": namespace}}],
        }))
        return path


def _handler(api: FakeK8sApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            url = urlsplit(self.path)
            api.requests.append((self.command, url.path, body))
            parts = url.path.strip("/").split("/")  # api v1 namespaces <ns> pods [<name> [log]]
            if api.kubelet and parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[4] == "pods":
                self._kubelet(parts[5:], parse_qs(url.query), body)
            elif api.kubelet and parts[:3] == ["apis", "batch", "v1"] and len(parts) >= 6 and parts[5] == "jobs":
                self._jobs(parts[6:], body)
            elif self.command == "POST":
                self._answer(403, REFUSAL)
            else:
                self._answer(404, {**REFUSAL, "reason": "NotFound", "code": 404})

        def _jobs(self, rest: list[str], body: dict | None) -> None:
            """apis/batch/v1/namespaces/<ns>/jobs[/<name>[/status]]: create runs it, status reports it, delete kills."""
            if self.command == "POST" and not rest:
                api.jobs[body["metadata"]["name"]] = LocalPod(body, api.secrets, api.cwd)
                self._answer(201, body)
            elif self.command == "GET" and rest and rest[0] in api.jobs:
                self._answer(200, api.jobs[rest[0]].job_with_status())
            elif self.command == "DELETE" and rest and rest[0] in api.jobs:
                if api.jobs[rest[0]].proc.poll() is None:
                    api.jobs[rest[0]].proc.kill()
                self._answer(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            else:
                self._answer(404, {**REFUSAL, "reason": "NotFound", "code": 404})

        def _kubelet(self, rest: list[str], query: dict, body: dict | None) -> None:
            if self.command == "POST" and not rest:
                api.pods[body["metadata"]["name"]] = LocalPod(body, api.secrets, api.cwd)
                self._answer(201, body)
            elif self.command == "GET" and not rest:  # list, with fieldSelector=metadata.name=<pod>
                name = query.get("fieldSelector", [""])[0].removeprefix("metadata.name=")
                items = [api.pods[name].with_status()] if name in api.pods else []
                self._answer(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
            elif self.command == "GET" and len(rest) == 2 and rest[1] == "log" and rest[0] in api.pods:
                data = api.pods[rest[0]].log().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif self.command == "DELETE" and len(rest) == 1 and rest[0] in api.pods:
                pod = api.pods[rest[0]]
                if pod.proc.poll() is None:
                    pod.proc.kill()
                self._answer(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            else:
                self._answer(404, {**REFUSAL, "reason": "NotFound", "code": 404})

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _record

        def log_message(self, *args) -> None:  # keep pytest's output clean
            pass

    return Handler


@contextmanager
def fake_k8s_api(folder: Path, namespace: str = "qlora-test", **kwargs) -> Iterator[tuple[FakeK8sApi, Path]]:
    """(the recorder, a kubeconfig file pointing at it); when the block ends the server stops, and local pods get a
    minute to end by themselves before they are killed. `kwargs`: FakeK8sApi's (kubelet, secrets, cwd)."""
    api = FakeK8sApi(**kwargs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, api.kubeconfig(folder, server.server_address[1], namespace)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        for pod in [*api.pods.values(), *api.jobs.values()]:
            try:  # a step process may still be tearing down after its last event: let it end by itself
                pod.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pod.proc.kill()
                pod.proc.wait(timeout=30)
