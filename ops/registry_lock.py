"""One registration at a time against an embedded sqlite registry, across threads and processes.

sqlite allows one writer; MLflow's registration is several transactions (model, version, tags, alias), and
concurrent ones fail with "database is locked" or interleave. A tracking server serialises for itself, so
the lock applies to sqlite URIs only. Holding it also makes check-then-register (idempotency) atomic.
"""

from __future__ import annotations

import fcntl
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_THREAD_LOCK = threading.Lock()  # flock is per open file; this covers threads of one process too


@contextmanager
def registry_lock(tracking_uri: str, timeout_s: float = 900.0) -> Iterator[None]:
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with _THREAD_LOCK, lock_path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process held the registry lock {lock_path} for over {timeout_s:.0f}s")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
