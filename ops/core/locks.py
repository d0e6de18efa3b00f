"""An exclusive lock on a file, across processes (flock) and threads, with a timeout that names the file."""

from __future__ import annotations

import fcntl
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_THREAD_LOCKS: dict[str, threading.Lock] = {}  # flock is per open file; these cover threads of one process
_GUARD = threading.Lock()


@contextmanager
def file_lock(path: Path, timeout_s: float = 900.0) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(str(path.resolve()), threading.Lock())
    deadline = time.monotonic() + timeout_s
    with thread_lock, path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process held the lock {path} for over {timeout_s:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
