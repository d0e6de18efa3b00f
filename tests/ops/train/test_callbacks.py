"""ProgressCallback's start-of-training checks, on transformers' own TrainingArguments and TrainerState."""

from __future__ import annotations

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from ops.train.callbacks import ProgressCallback, TokenCounter


@pytest.mark.parametrize("warmup,max_steps,warned", [(100, 40, True), (40, 40, True), (0.999, 40, True),
                                                     (30, 40, False), (0.1, 40, False), (0, 40, False)])
def test_a_warm_up_as_long_as_training_is_named(tmp_path, warmup, max_steps, warned):
    """A warm-up covering every step trains below the set learning rate throughout: said once, at the start."""
    args = TrainingArguments(output_dir=str(tmp_path), warmup_steps=warmup, learning_rate=2e-4, use_cpu=True,
                             report_to=[])
    lines: list[str] = []
    ProgressCallback(lines.append, TokenCounter()).on_train_begin(args, TrainerState(max_steps=max_steps),
                                                                  TrainerControl())
    expected = [f"warning: the warm-up ({args.get_warmup_steps(max_steps)} steps) is as long as training "
                f"({max_steps} steps): the learning rate never reaches 0.0002; shorten the warm-up or train longer"]
    assert lines == (expected if warned else [])
