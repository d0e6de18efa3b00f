"""Trainer callbacks: progress lines for the run log, a non-finite-loss guard, and MLflow loss logging."""

from __future__ import annotations

import math
import time
from typing import Callable

from transformers import TrainerCallback


class TokenCounter:
    """Counts the real (non-padding) tokens the collator hands the model, for tokens/s."""

    def __init__(self) -> None:
        self.tokens = 0


class ProgressCallback(TrainerCallback):
    """Logs `step/total, loss, tokens/s, time left` at each logging step and the held-out loss at each evaluation;
    keeps the training loss history. Evaluation passes count neither in tokens/s nor in its time."""

    def __init__(self, log: Callable[[str], None], counter: TokenCounter):
        self.log, self.counter = log, counter
        self.history: list[tuple[int, float]] = []
        self._t0 = self._tokens0 = self._step0 = None
        self._eval_seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0, self._tokens0, self._step0 = time.time(), self.counter.tokens, state.global_step

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # the collator counts training batches only (ops.train.packing.batch_collator); take the pass's time out too
        self._eval_seconds += float((metrics or {}).get("eval_runtime", 0.0))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_loss" in logs:
            # called before the Trainer updates best_metric: a lower value than it is a new best
            new_best = state.best_metric is None or logs["eval_loss"] < state.best_metric
            best = "  (best so far)" if new_best else ""
            self.log(f"eval at step {state.global_step}/{state.max_steps}  eval_loss {logs['eval_loss']:.4f}{best}")
        if not logs or "loss" not in logs:
            return
        elapsed = self._train_seconds()
        done = state.global_step - self._step0
        left = (state.max_steps - state.global_step) * elapsed / max(done, 1)
        self.history.append((state.global_step, float(logs["loss"])))
        self.log(f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                 f"lr {logs.get('learning_rate', 0):.2e}  {self.tokens_per_second():,.0f} tokens/s  {left:,.0f}s left")

    def _train_seconds(self) -> float:
        return max(time.time() - self._t0 - self._eval_seconds, 1e-9)

    def tokens_per_second(self) -> float:
        """Training tokens (padding and evaluation passes not counted) per second of training time."""
        return (self.counter.tokens - self._tokens0) / self._train_seconds()


class NonFiniteLossError(RuntimeError):
    pass


class NonFiniteLossGuard(TrainerCallback):
    """Stops training at the first NaN or infinite loss, naming the step, instead of training on garbage."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLossError(f"training loss became {loss} at step {state.global_step}; stopping. "
                                     "Lower the learning rate or check the data.")


class MlflowLossCallback(TrainerCallback):
    """Logs loss and learning rate to an existing MLflow run at every logging step, and `eval_loss` at each evaluation.

    A tracking server that stops answering costs curve points, not the training run: failures are logged
    once as a warning and training goes on (the final metrics are logged again at registration).
    """

    def __init__(self, tracking_uri: str, run_id: str, log: Callable[[str], None] = print):
        from mlflow.tracking import MlflowClient

        self.client, self.run_id, self.log = MlflowClient(tracking_uri), run_id, log
        self.failures = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        metrics = {f"train_{k}": float(logs[k]) for k in ("loss", "learning_rate", "grad_norm")
                   if logs and k in logs and math.isfinite(float(logs[k]))}
        if logs and "eval_loss" in logs and math.isfinite(float(logs["eval_loss"])):
            metrics["eval_loss"] = float(logs["eval_loss"])
        try:
            for key, value in metrics.items():
                self.client.log_metric(self.run_id, key, value, step=state.global_step)
        except Exception as err:  # MLflow raises assorted types for network and database errors
            self.failures += 1
            if self.failures == 1:
                self.log(f"warning: could not log step {state.global_step} metrics to MLflow ({err}); "
                         "training goes on, later failures are counted silently")
