"""Training processes that never outlive the process that started them (Linux; a no-op elsewhere)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send this process `sig` when its parent dies (prctl PR_SET_PDEATHSIG).

    torchrun starts each rank in a session of its own, so killing the step's process group reaches torchrun but not
    the ranks; with this, a killed step (or torchrun) takes its ranks with it instead of leaving them training.

    Returns:
        True when set (Linux), False elsewhere. When the parent is already gone, `sig` is sent at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # no libc prctl (musl variants without it)
        return False
    if os.getppid() == 1:  # the parent died before the request was made: orphaned already
        os.kill(os.getpid(), sig)
    return True
