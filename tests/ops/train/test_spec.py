"""TrainSpec: the QLoRA paper's defaults, and one clear line for every combination that cannot run as asked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ops.train.spec import TrainSpec


def error_of(**fields) -> str:
    with pytest.raises(ValidationError) as info:
        TrainSpec(**fields)
    return str(info.value)


def test_defaults_are_the_qlora_papers():
    spec = TrainSpec(max_steps=10)
    # Dettmers et al. 2023, appendix B.2: r 64, alpha 16, dropout 0.1 (7B/13B), lr 2e-4, constant, clip 0.3, paged AdamW
    assert (spec.r, spec.alpha, spec.dropout, spec.learning_rate) == (64, 16, 0.1, 2e-4)
    assert (spec.lr_scheduler, spec.warmup(), spec.max_grad_norm, spec.optim) == ("constant", 0, 0.3, "paged_adamw_32bit")
    assert (spec.eval_steps, spec.early_stopping_patience, spec.neftune_noise_alpha) == (None, None, None)


@pytest.mark.parametrize("fields, message", [
    ({}, "set max_steps or num_epochs: neither is set, and exactly one decides how long training runs"),
    ({"max_steps": 100, "num_epochs": 2}, "set max_steps or num_epochs, not both: got max_steps=100 and num_epochs=2.0"),
    ({"num_epochs": 0}, "num_epochs must be > 0, got 0"),
    ({"max_steps": 10, "lr_scheduler": "cosine", "warmup_steps": 5, "warmup_ratio": 0.1},
     "set warmup_steps or warmup_ratio, not both: got warmup_steps=5 and warmup_ratio=0.1"),
    ({"max_steps": 10, "warmup_ratio": 1.0}, "warmup_ratio must be in [0, 1), got 1.0"),
    ({"max_steps": 10, "warmup_steps": 5},
     "lr_scheduler 'constant' has no warm-up, so the warm-up set would be ignored; use lr_scheduler: constant_with_warmup"),
    ({"max_steps": 10, "early_stopping_patience": 2},
     "early_stopping_patience and eval_on_start need eval_steps (evaluation during training)"),
    ({"max_steps": 10, "eval_steps": 50},
     "keep_best needs a checkpoint at every evaluation: save_steps (100) must equal eval_steps (50), or set keep_best: false"),
    ({"max_steps": 10, "eval_steps": 0}, "eval_steps must be > 0, got 0"),
    ({"max_steps": 10, "eval_steps": 5, "save_steps": 5, "early_stopping_patience": 0},
     "early_stopping_patience must be > 0, got 0"),
    ({"max_steps": 10, "neftune_noise_alpha": -5.0}, "neftune_noise_alpha must be > 0, got -5.0"),
])
def test_inconsistent_settings_fail_with_one_line(fields, message):
    assert message in error_of(**fields)


def test_accepted_combinations():
    assert TrainSpec(num_epochs=0.5).length() == "0.5 epochs" and TrainSpec(max_steps=600).length() == "600 steps"
    ratio = TrainSpec(max_steps=10, lr_scheduler="cosine", warmup_ratio=0.03)
    assert ratio.warmup() == 0.03  # transformers 5 reads a warmup_steps float below 1 as a ratio
    assert TrainSpec(max_steps=10, lr_scheduler="constant_with_warmup", warmup_steps=30).warmup() == 30
    assert TrainSpec(max_steps=10, eval_steps=50, keep_best=False).save_steps == 100  # no best kept: any cadence
    assert TrainSpec(max_steps=10, eval_steps=5, save_steps=5, early_stopping_patience=3, eval_on_start=True).eval_on_start
