"""Trainer callbacks: progress lines for the run log, a progress bar on the terminal, a non-finite-loss guard, and
MLflow loss logging."""

from __future__ import annotations

import math
import time
from typing import Callable

from transformers import TrainerCallback

from ..core.progress import progress as progress_bar


class TokenCounter:
    """Counts the real (non-padding) tokens the collator hands the model, for tokens/s."""

    def __init__(self) -> None:
        self.tokens = 0


class ProgressCallback(TrainerCallback):
    """Logs `step/total, loss, tokens/s, time left` at each logging step and the held-out loss at each evaluation;
    keeps the training loss history. Evaluation passes count neither in tokens/s nor in its time.

    Under torchrun each rank counts its own batches: tokens/s is this rank's times `world_size` (an estimate; the
    training summary sums every rank's count).
    """

    def __init__(self, log: Callable[[str], None], counter: TokenCounter, world_size: int = 1):
        self.log, self.counter, self.world_size = log, counter, world_size
        self.history: list[tuple[int, float]] = []
        self._t0 = self._tokens0 = self._step0 = None
        self._eval_seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0, self._tokens0, self._step0 = time.time(), self.counter.tokens, state.global_step
        warmup = args.get_warmup_steps(state.max_steps) if args is not None else 0
        if warmup >= state.max_steps > 0:  # e.g. warmup_steps 100 with num_epochs that come to 40 steps
            self.log(f"warning: the warm-up ({warmup} steps) is as long as training ({state.max_steps} steps): the "
                     f"learning rate never reaches {args.learning_rate:g}; shorten the warm-up or train longer")

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
        elapsed = self.train_seconds()
        done = state.global_step - self._step0
        left = (state.max_steps - state.global_step) * elapsed / max(done, 1)
        self.history.append((state.global_step, float(logs["loss"])))
        self.log(f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                 f"lr {logs.get('learning_rate', 0):.2e}  {self.tokens_per_second():,.0f} tokens/s  {left:,.0f}s left")

    @property
    def tokens_at_start(self) -> int:
        """This rank's token count when training (or its resume) began."""
        return self._tokens0 or 0

    def train_seconds(self) -> float:
        """Wall seconds since training began, evaluation passes taken out."""
        return max(time.time() - self._t0 - self._eval_seconds, 1e-9)

    def tokens_per_second(self) -> float:
        """Training tokens (padding and evaluation passes not counted) per second of training time."""
        return self.world_size * (self.counter.tokens - self.tokens_at_start) / self.train_seconds()


class ProgressBarCallback(TrainerCallback):
    """A bar on the terminal (ops.core.progress: none in the Dagster UI or a pipe) from step 1: step/total, elapsed,
    time left, and the running loss and tokens/s, updated every step, not only every `logging_steps`.

    The loss is the mean since the last logged step, what the next step line will say; it needs the Trainer
    (`watch(trainer)`), else the bar shows the last logged loss.
    """

    def __init__(self, lines: ProgressCallback, **bar_options):
        self.lines, self.bar_options = lines, bar_options
        self.bar = self.trainer = None
        self.last_loss: float | None = None

    def watch(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return  # one bar under torchrun, not one per process
        options = {"desc": "train", "unit": "step", "leave": True, **self.bar_options}
        self.bar = progress_bar(total=state.max_steps, initial=state.global_step, **options)

    def running_loss(self, state) -> float | None:
        """Mean training loss over the steps since the last log (the Trainer's own accumulator), else the last logged."""
        accumulated = getattr(self.trainer, "_tr_loss", None)
        since = state.global_step - getattr(self.trainer, "_globalstep_last_logged", state.global_step)
        if accumulated is None or since <= 0:
            return self.last_loss
        return float(accumulated) / since

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None or self.bar.disable:
            return  # no terminal: read nothing from the device
        loss = self.running_loss(state)
        shown = f"loss {loss:.4f}  " if loss is not None else ""
        self.bar.set_postfix_str(f"{shown}{self.lines.tokens_per_second():,.0f} tokens/s", refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


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
