"""A stand-in Kubernetes API server on loopback that records what a client asks to create and refuses it.

dagster-k8s's executor and PipesK8sClient talk to it through the real kubernetes client (a kubeconfig pointing at
http://127.0.0.1:<port>), so a test sees the exact Job or Pod JSON a cluster would receive. Every create is
answered 403 Forbidden: nothing is scheduled, and the caller fails at once instead of polling for a pod that never
runs. Not a cluster: it checks no schema and keeps no objects.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

REFUSAL = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
           "message": "offline test API server: request recorded, nothing created"}


class FakeK8sApi:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict | None]] = []  # (method, path, JSON body)

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
            api.requests.append((self.command, self.path.split("?")[0], body))
            if self.command == "POST":
                self._answer(403, REFUSAL)
            else:
                self._answer(404, {**REFUSAL, "reason": "NotFound", "code": 404})

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _record

        def log_message(self, *args) -> None:  # keep pytest's output clean
            pass

    return Handler


@contextmanager
def fake_k8s_api(folder: Path, namespace: str = "qlora-test") -> Iterator[tuple[FakeK8sApi, Path]]:
    """(the recorder, a kubeconfig file pointing at it); the server stops when the block ends."""
    api = FakeK8sApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, api.kubeconfig(folder, server.server_address[1], namespace)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
