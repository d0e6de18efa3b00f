"""Recipes on the tiny 4-bit model: evaluation during training, the best checkpoint kept as the adapter, early
stopping with a patience (also across a crash), epochs counted in steps, warm-up as a ratio, NEFTune.

The base is quantized with float32 compute and training pinned to float32 (as the golden-loss test does), so a CPU
with AVX512-BF16/AMX computes the same eval losses and picks the same best step as an AVX2-only one.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainerControl, TrainerState

from ops.data.preparation import load_prepared
from ops.model.device import DeviceInfo
from ops.train.callbacks import MlflowLossCallback, ProgressCallback, TokenCounter
from ops.train.spec import TrainSpec
from ops.train.trainer import train_adapter
from tests.tiny import TINY_RECIPE, quantize_fp32

pytestmark = pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU:UserWarning")
FP32_CPU = DeviceInfo("cpu", "recipe-test", torch.float32, "float32: pinned so every CPU kind picks the same best step")
# A high constant rate with an evaluation (and checkpoint) every step: on this model and data the held-out loss falls
# to its lowest at step 8 and stays above it up to step 12 (recorded on an AVX2-only CPU, float32, 2026-11-29).
EVAL_EVERY_STEP = dict(TINY_RECIPE, max_steps=12, batch_size=8, logging_steps=1, learning_rate=0.05,
                       lr_scheduler="constant", eval_steps=1, save_steps=1, seed=0)
BEST_STEP = 8


def quiet(_):
    pass


def expected_stop(history: list[tuple[int, float]], patience: int) -> int | None:
    """The step at which `patience` evaluations in a row have not lowered the best eval loss (None: never)."""
    best, misses = math.inf, 0
    for step, loss in history:
        best, misses = (loss, 0) if loss < best else (best, misses + 1)
        if misses >= patience:
            return step
    return None


def adapter_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def fp32_base(tiny_base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32-base")
    quantize_fp32(tiny_base_dir, out)
    return out


@pytest.fixture(scope="module")
def full_run(fp32_base, tiny_dataset, tmp_path_factory):
    """12 steps evaluated at each step, no early stopping: (out dir, result)."""
    out = tmp_path_factory.mktemp("full-run")
    return out, train_adapter(fp32_base, tiny_dataset[0], out, TrainSpec(**EVAL_EVERY_STEP), FP32_CPU, log=quiet)


def test_the_adapter_is_the_checkpoint_with_the_lowest_eval_loss(full_run):
    out, result = full_run
    history = result.eval_history
    assert [step for step, _ in history] == list(range(1, 13)) and result.steps == 12 and not result.stopped_early
    assert all(math.isfinite(loss) and 4 < loss < 7 for _, loss in history), history
    assert min(history, key=lambda e: e[1])[0] == BEST_STEP == result.best_step, history
    assert result.best_eval_loss == dict(history)[BEST_STEP]
    checkpoints = out / "checkpoints"
    # save_total_limit 2 keeps the newest checkpoints, and the best one besides
    assert (checkpoints / f"checkpoint-{BEST_STEP}").is_dir() and (checkpoints / "checkpoint-12").is_dir()
    saved = adapter_weights(out / "adapter")
    assert same_weights(saved, adapter_weights(checkpoints / f"checkpoint-{BEST_STEP}"))
    assert not same_weights(saved, adapter_weights(checkpoints / "checkpoint-12"))  # not simply the last step's


def test_early_stopping_stops_after_patience_evaluations_without_improvement(full_run, fp32_base, tiny_dataset, tmp_path):
    full = full_run[1].eval_history
    assert expected_stop(full, 2) == 10  # best at 8; 9 and 10 do not beat it
    lines: list[str] = []
    spec = TrainSpec(**EVAL_EVERY_STEP, early_stopping_patience=2)
    result = train_adapter(fp32_base, tiny_dataset[0], tmp_path, spec, FP32_CPU, log=lines.append)
    assert (result.steps, result.max_steps, result.stopped_early, result.best_step) == (10, 12, True, BEST_STEP)
    assert [s for s, _ in result.eval_history] == list(range(1, 11))
    assert [loss for _, loss in result.eval_history] == pytest.approx([loss for _, loss in full[:10]], rel=1e-5)
    assert same_weights(adapter_weights(tmp_path / "adapter"),
                        adapter_weights(tmp_path / "checkpoints" / f"checkpoint-{BEST_STEP}"))
    assert any(line.startswith(f"eval at step {BEST_STEP}/12  eval_loss ") and line.endswith("(best so far)")
               for line in lines), lines
    assert f"the adapter holds step {BEST_STEP}'s weights" in lines[-1]


class CrashAfterSaving(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"pre-empted after step {state.global_step}")


def test_a_crash_keeps_the_best_step_and_the_patience_count(fp32_base, tiny_dataset, tmp_path):
    spec = TrainSpec(**EVAL_EVERY_STEP, early_stopping_patience=2)
    with pytest.raises(KeyboardInterrupt, match="pre-empted after step 9"):
        train_adapter(fp32_base, tiny_dataset[0], tmp_path, spec, FP32_CPU, callbacks=[CrashAfterSaving(9)], log=quiet)
    resumed = train_adapter(fp32_base, tiny_dataset[0], tmp_path, spec, FP32_CPU, log=quiet)
    # step 9 already missed once before the crash: a counter restarted at 0 would run on to step 11
    assert (resumed.resumed_from_step, resumed.steps, resumed.stopped_early, resumed.best_step) == (9, 10, True, BEST_STEP)
    assert [s for s, _ in resumed.eval_history] == list(range(1, 11))  # the evaluations before the crash are kept
    assert same_weights(adapter_weights(tmp_path / "adapter"),
                        adapter_weights(tmp_path / "checkpoints" / f"checkpoint-{BEST_STEP}"))


class LogRecorder(TrainerCallback):
    def __init__(self):
        self.logs: list[tuple[int, dict]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs or {})))


def test_epochs_become_steps_and_a_warmup_ratio_a_share_of_them(fp32_base, tiny_dataset, tmp_path):
    rows = len(load_prepared(tiny_dataset[0])["train"])
    per_epoch = math.ceil(math.ceil(rows / 8) / 2)  # a step every 2 batches of 8; the epoch's last may take one batch
    assert (rows, per_epoch) == (180, 12)
    recorder = LogRecorder()
    spec = TrainSpec(**{**TINY_RECIPE, "num_epochs": 0.5, "batch_size": 8, "grad_accum": 2, "logging_steps": 1,
                        "warmup_ratio": 0.5, "save_steps": 100})
    result = train_adapter(fp32_base, tiny_dataset[0], tmp_path, spec, FP32_CPU, callbacks=[recorder], log=quiet)
    assert (result.steps, result.max_steps) == (6, 6)  # ceil(0.5 x 12)
    assert result.epochs == pytest.approx(12 / 23)  # the Trainer counts epochs in batches: 12 of the 23 done
    rates = {step: logs["learning_rate"] for step, logs in recorder.logs if "learning_rate" in logs}
    # warm-up: ceil(0.5 x 6) = 3 steps from 0 to the peak 1e-3 (each step logs the rate it used), then cosine decay
    assert [rates[s] for s in (1, 2, 3, 4)] == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3, 1e-3])
    assert rates[6] < rates[5] < rates[4]


def test_neftune_changes_the_training_loss_but_not_evaluation(fp32_base, tiny_dataset, tmp_path):
    base = dict(TINY_RECIPE, max_steps=2, batch_size=8, logging_steps=1, eval_steps=2, save_steps=2, eval_on_start=True)
    plain = train_adapter(fp32_base, tiny_dataset[0], tmp_path / "plain", TrainSpec(**base), FP32_CPU, log=quiet)
    noisy = train_adapter(fp32_base, tiny_dataset[0], tmp_path / "noisy", TrainSpec(**base, neftune_noise_alpha=5.0),
                          FP32_CPU, log=quiet)
    # step 1 starts from the same weights (LoRA B is zero) on the same batch: only the embedding noise differs
    assert abs(noisy.loss_history[0][1] - plain.loss_history[0][1]) > 1e-3, (plain.loss_history, noisy.loss_history)
    # evaluated before the first step, with NEFTune's hook in place: the same loss, so no noise in evaluation
    assert plain.eval_history[0][0] == noisy.eval_history[0][0] == 0
    assert noisy.eval_history[0][1] == pytest.approx(plain.eval_history[0][1], rel=1e-6)


def test_progress_logs_evaluations_and_leaves_them_out_of_tokens_per_second():
    lines, counter = [], TokenCounter()
    progress = ProgressCallback(lines.append, counter)
    state = TrainerState(global_step=0, max_steps=10)
    progress.on_train_begin(None, state, TrainerControl())
    progress._t0 -= 10.0  # as if training began 10 s ago
    counter.tokens += 500  # one training batch (the collator does not count evaluation batches)
    state.global_step = 5
    progress.on_log(None, state, TrainerControl(), logs={"eval_loss": 3.5, "eval_runtime": 4.0})
    progress.on_evaluate(None, state, TrainerControl(), metrics={"eval_loss": 3.5, "eval_runtime": 4.0})
    state.best_metric = 3.5
    progress.on_log(None, state, TrainerControl(), logs={"eval_loss": 3.75})
    assert lines == ["eval at step 5/10  eval_loss 3.5000  (best so far)", "eval at step 5/10  eval_loss 3.7500"]
    assert progress.history == []  # evaluations are not training losses
    assert progress.tokens_per_second() == pytest.approx(500 / 6.0, rel=1e-3)  # 10 s less the 4 s evaluation


def test_mlflow_gets_the_eval_loss_at_its_step(tmp_path):
    from mlflow.tracking import MlflowClient

    from ops.registry.tracking import start_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = start_run(uri, "eval-loss", "eval", {})
    callback = MlflowLossCallback(uri, run_id)
    callback.on_log(None, TrainerState(global_step=4), TrainerControl(), logs={"loss": 5.5})
    callback.on_log(None, TrainerState(global_step=4), TrainerControl(), logs={"eval_loss": 5.25, "eval_runtime": 0.1})
    callback.on_log(None, TrainerState(global_step=8), TrainerControl(), logs={"eval_loss": float("nan")})
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "eval_loss")] == [(4, 5.25)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")] == [(4, 5.5)]
    assert client.get_metric_history(run_id, "eval_runtime") == []
