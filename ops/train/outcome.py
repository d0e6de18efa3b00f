"""What the Trainer's state says about a finished run: the held-out loss at each evaluation and the best step."""

from __future__ import annotations

from pathlib import Path


def eval_history(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, eval loss in nats) of every evaluation in the Trainer's log, resumed ones included, one per step.

    Args:
        log_history: `TrainerState.log_history` (restored from the checkpoint on a resume).
    Returns:
        pairs sorted by step; step 0 is the evaluation before training (`eval_on_start`).
    """
    return sorted({int(e["step"]): float(e["eval_loss"]) for e in log_history if "eval_loss" in e}.items())


def best_checkpoint_step(state) -> int | None:
    """The step of the checkpoint the Trainer chose as best (lowest eval loss), read off `state.best_model_checkpoint`.

    Returns:
        None without evaluation, or when no saved checkpoint beat the evaluation before training.
    """
    if not state.best_model_checkpoint:
        return None
    return int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[-1])
