"""QLoRA training on the tiny 4-bit base: real Trainer steps, checkpoints that resume, guards that stop bad runs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState

from ops.data.tokens import IGNORE_INDEX
from ops.model.device import DeviceInfo
from ops.train.callbacks import NonFiniteLossError, NonFiniteLossGuard, ProgressCallback, TokenCounter
from ops.train.spec import TrainSpec
from ops.train.trainer import (
    build_lora_config,
    build_training_args,
    describe_optimizer,
    latest_checkpoint,
    main,
    train_adapter,
)
from ops.train.packing import BatchTokens, batch_collator
from tests.tiny import TINY_RECIPE

# r=16 on every linear layer of 2 blocks: q, k, v, o take r*(64+64), gate, up, down r*(64+120) each
TINY_LORA_PARAMS = 2 * (4 * 16 * (64 + 64) + 3 * 16 * (64 + 120))
# Expected here: bitsandbytes says so each time a paged optimizer runs on the CPU (one test asserts it does).
pytestmark = pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU:UserWarning")
TINY_SPEC = dict(batch_size=8, save_steps=2, logging_steps=1, warmup_steps=1, **TINY_RECIPE)


def quiet(_):
    pass


def cpu_dtype_name() -> str:
    """What `auto` computes in on this CPU: bfloat16 where it has AVX512-BF16/AMX, else float32."""
    from ops.model.device import compute_dtype_choice

    return str(compute_dtype_choice("cpu")[0]).removeprefix("torch.")


def test_trains_the_requested_steps_and_saves_the_adapter(tiny_adapter, tiny_dataset):
    out, summary = tiny_adapter
    assert summary.steps == 4 and summary.resumed_from_step == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 32 and config["peft_type"] == "LORA"
    targets = config["target_modules"]  # "all-linear" is saved resolved to the 14 layers it matched
    assert len(targets) == 14 and "lm_head" not in targets
    assert {t.rsplit(".", 1)[-1] for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert summary.trainable_params == TINY_LORA_PARAMS
    assert 0 < summary.trainable_share < 1
    assert summary.trainable_share == pytest.approx(TINY_LORA_PARAMS / summary.total_params)
    assert json.loads((out / "train_summary.json").read_text()) == summary.model_dump(mode="json")


def test_reports_which_optimizer_really_ran(tiny_adapter):
    optimizer = tiny_adapter[1].optimizer
    assert optimizer.startswith("paged_adamw_32bit: bitsandbytes.")  # transformers builds bnb AdamW(is_paged=True)
    assert "fell back" in optimizer and "non-paged" in optimizer  # paging is CUDA only


def test_logs_every_step_with_finite_losses_and_counts_tokens(tiny_adapter, tiny_dataset):
    summary = tiny_adapter[1]
    history = summary.loss_history
    assert [step for step, _ in history] == [1, 2, 3, 4]
    assert all(math.isfinite(loss) and 0 < loss < 2 * math.log(600) for _, loss in history)  # near ln(vocab) at init
    assert summary.final_loss == history[-1][1]
    assert summary.mean_train_loss == pytest.approx(sum(loss for _, loss in history) / 4, rel=1e-3)
    # 4 steps of 8 rows, each row at most max_seq_len=64 tokens, padding not counted
    assert 4 * 8 * 10 < summary.train_tokens <= 4 * 8 * 64
    assert summary.tokens_per_second > 0 and summary.peak_memory_bytes > 0
    assert (summary.device, summary.compute_dtype) == ("cpu", cpu_dtype_name())  # bf16 on AVX512-BF16/AMX CPUs


def test_more_steps_lower_the_loss(tiny_adapter, tiny_quantized, tiny_dataset, cpu, tmp_path):
    spec = TrainSpec(**{**TINY_SPEC, "max_steps": 12, "learning_rate": 5e-3, "gradient_checkpointing": False,
                        "save_steps": 100})
    lines: list[str] = []
    with pytest.warns(UserWarning, match="Paged optimizers are not supported on CPU"):  # what the summary reports
        summary = train_adapter(tiny_quantized[0] / "model", tiny_dataset[0], tmp_path, spec, cpu, log=lines.append)
    assert "fell back to non-paged optimizer state" in summary.optimizer
    history = summary.loss_history
    assert summary.steps == 12 and len(history) == 12
    first, last = history[0][1], history[-1][1]
    # from ln(vocab) ~ 6.37 at init, 12 small steps take ~0.3 off (batch-to-batch noise is ~0.1)
    assert last < first, history
    assert sum(loss for _, loss in history[-3:]) / 3 < first - 0.2, history
    # same seed, same data order, LoRA B initialised to zero: step 1 matches the 4-step fixture's step 1
    assert first == pytest.approx(tiny_adapter[1].loss_history[0][1], rel=1e-5)
    assert any(line.startswith("step 12/12  loss ") for line in lines)
    assert not (tmp_path / "checkpoints" / "checkpoint-2").exists()  # save_steps=100: only the end is saved


def test_resumes_from_the_newest_checkpoint(tiny_adapter, tiny_quantized, tiny_dataset, cpu, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_adapter[0] / "checkpoints", checkpoints)  # a 4-step run saved every 2 steps
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-4"
    lines: list[str] = []
    spec = TrainSpec(max_steps=6, **TINY_SPEC)
    summary = train_adapter(tiny_quantized[0] / "model", tiny_dataset[0], tmp_path / "out", spec, cpu,
                            checkpoint_dir=checkpoints, log=lines.append)
    assert summary.resumed_from_step == 4 and summary.steps == 6
    assert [step for step, _ in summary.loss_history] == [5, 6]  # only the new steps ran
    assert "resuming from checkpoint-4 (step 4 of 6 steps)" in lines
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-6"
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()


class CrashAfterSaving(TrainerCallback):
    """Kills the run right after the checkpoint of `step` is written, as a pre-empted machine would."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"pre-empted after step {state.global_step}")


def test_a_crashed_run_resumes_where_an_uninterrupted_one_would_be(tiny_quantized, tiny_dataset, cpu, tmp_path):
    model_dir, spec = tiny_quantized[0] / "model", TrainSpec(max_steps=6, **TINY_SPEC)
    with pytest.raises(KeyboardInterrupt, match="pre-empted after step 4"):
        train_adapter(model_dir, tiny_dataset[0], tmp_path / "run", spec, cpu, callbacks=[CrashAfterSaving(4)], log=quiet)
    assert not (tmp_path / "run" / "adapter").exists()
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") == tmp_path / "run" / "checkpoints" / "checkpoint-4"

    resumed = train_adapter(model_dir, tiny_dataset[0], tmp_path / "run", spec, cpu, log=quiet)
    straight = train_adapter(model_dir, tiny_dataset[0], tmp_path / "straight", spec, cpu, log=quiet)
    assert (resumed.resumed_from_step, resumed.steps, straight.resumed_from_step) == (4, 6, 0)
    # the same weights, optimizer state, schedule, RNG and data order: steps 5 and 6 come out the same
    assert [s for s, _ in resumed.loss_history] == [5, 6]
    assert [loss for _, loss in resumed.loss_history] == pytest.approx(
        [loss for _, loss in straight.loss_history[4:]], abs=1e-4)


def test_latest_checkpoint_skips_one_cut_off_mid_write(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (2, 9, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # numeric order, not text order
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 1')  # truncated
    (tmp_path / "checkpoint-12").mkdir()  # no state written yet
    (tmp_path / "checkpoint-final").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-9"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_loss_stops_training_naming_the_step(bad):
    guard, state = NonFiniteLossGuard(), TrainerState(global_step=7)
    with pytest.raises(NonFiniteLossError, match=f"training loss became {bad} at step 7"):
        guard.on_log(None, state, TrainerControl(), logs={"loss": bad})
    guard.on_log(None, state, TrainerControl(), logs={"loss": 1.5, "learning_rate": 1e-3})
    guard.on_log(None, state, TrainerControl(), logs={"eval_loss": 2.0})
    guard.on_log(None, state, TrainerControl(), logs=None)


def test_progress_callback_keeps_the_loss_history():
    lines, counter = [], TokenCounter()
    progress = ProgressCallback(lines.append, counter)
    state = TrainerState(global_step=0, max_steps=10)
    progress.on_train_begin(None, state, TrainerControl())
    counter.tokens += 500
    state.global_step = 5
    progress.on_log(None, state, TrainerControl(), logs={"loss": 2.25, "learning_rate": 1e-3})
    progress.on_log(None, state, TrainerControl(), logs={"train_runtime": 3.0})  # the end-of-training log
    assert progress.history == [(5, 2.25)]
    assert len(lines) == 1 and lines[0].startswith("step 5/10  loss 2.2500  lr 1.00e-03  ")
    assert progress.tokens_per_second() > 0


def test_padding_collator_pads_and_masks_and_counts_real_tokens():
    counter = BatchTokens()
    collate = batch_collator(pad_id=3, counter=counter, packing=False)
    rows = [{"input_ids": [1, 10, 11, 12], "labels": [-100, -100, 11, 12]}, {"input_ids": [1, 20], "labels": [-100, 20]}]
    batch = collate(rows)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 12], [1, 20, 3, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 11, 12], [-100, 20, IGNORE_INDEX, IGNORE_INDEX]]
    assert all(t.dtype == torch.long for t in batch.values())
    assert counter.tokens == 6 and counter.padding_share() == pytest.approx(2 / 8)
    collate(rows[1:])
    assert counter.tokens == 8


def test_collator_counts_training_batches_only():
    """The Trainer's eval loop shares the collator; its batches must not count as training tokens."""
    counter, training = BatchTokens(), [True]
    collate = batch_collator(pad_id=3, counter=counter, packing=False, counting=lambda: training[0])
    rows = [{"input_ids": [1, 10, 11], "labels": [-100, 10, 11]}]
    collate(rows)
    training[0] = False
    evaluated = collate(rows)
    assert counter.tokens == 3 and counter.slots == 3 and evaluated["input_ids"].tolist() == [[1, 10, 11]]


def test_builders_follow_the_spec(cpu, tmp_path):
    assert build_lora_config(TrainSpec(max_steps=1)).target_modules == "all-linear"
    lora = build_lora_config(TrainSpec(max_steps=1, r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules)) == (8, 16, 0.0, {"q_proj", "v_proj"})
    args = build_training_args(TrainSpec(max_steps=7, warmup_steps=2, lr_scheduler="cosine"), cpu, tmp_path)
    assert (args.max_steps, args.warmup_steps, args.optim, args.use_cpu, args.bf16, args.fp16) == (
        7, 2, "paged_adamw_32bit", True, cpu.compute_dtype == torch.bfloat16, False)
    assert args.save_total_limit == 2 and args.max_grad_norm == 0.3 and args.report_to == []
    assert (args.eval_strategy, args.load_best_model_at_end, args.neftune_noise_alpha) == ("no", False, None)


def test_describe_optimizer_names_paging_truthfully():
    import bitsandbytes as bnb

    params = [torch.nn.Parameter(torch.zeros(4))]
    paged = bnb.optim.PagedAdamW32bit(params)
    gpu, cpu = DeviceInfo("cuda", "gpu", torch.bfloat16), DeviceInfo("cpu", "cpu", torch.float32)
    assert describe_optimizer(paged, "paged_adamw_32bit", gpu) == (
        "paged_adamw_32bit: bitsandbytes.PagedAdamW32bit with paged optimizer state "
        "(unified memory, pages to CPU under pressure)")
    assert "paging unsupported on CPU, fell back" in describe_optimizer(paged, "paged_adamw_32bit", cpu)
    assert describe_optimizer(torch.optim.AdamW(params), "adamw_torch", cpu) == "adamw_torch: torch.AdamW (not paged)"


def test_main_runs_standalone_from_a_yaml_config(tiny_quantized, tiny_dataset, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("max_steps: 1\nbatch_size: 4\nr: 4\nalpha: 8\noptim: adamw_torch\nlogging_steps: 1\n")
    main(["--model-dir", str(tiny_quantized[0] / "model"), "--dataset-dir", str(tiny_dataset[0]),
          "--out-dir", str(tmp_path / "out"), "--config", str(config)])
    out = capsys.readouterr().out
    printed = json.loads(out[out.rindex("\n{\n") + 1:])  # progress lines, then the summary as JSON
    assert printed["steps"] == 1 and printed["optimizer"] == "adamw_torch: torch.AdamW (not paged)"
    assert printed["trainable_params"] == TINY_LORA_PARAMS // 4  # r=4
    assert "loss_history" not in printed
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
