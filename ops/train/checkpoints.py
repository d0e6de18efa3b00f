"""The Trainer's checkpoints on disk: which one a run resumes from (no torch import: the launcher reads it too)."""

from __future__ import annotations

import json
from pathlib import Path


def checkpoint_step(path: Path) -> int:
    """The step of `checkpoint-<step>`."""
    return int(Path(path).name.rsplit("-", 1)[-1])


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer state was fully written (the Trainer writes it last)."""
    for ckpt in sorted(Path(checkpoint_dir).glob("checkpoint-[0-9]*"), key=checkpoint_step, reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            return ckpt
        except (OSError, ValueError):
            continue  # interrupted while being written: never resume from it
    return None
