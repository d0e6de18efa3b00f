"""Every step's settings fail before any work, with a message that names the field and the bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ops.data.spec import DataSpec
from ops.evaluation.spec import EvalSpec
from ops.model.spec import QuantSpec
from ops.registry.spec import RegistrySpec
from ops.train.spec import LoraSpec, TrainSpec


def error_of(cls, **fields) -> str:
    with pytest.raises(ValidationError) as info:
        cls(**fields)
    return str(info.value)


@pytest.mark.parametrize(
    "cls, fields, message",
    [
        (LoraSpec, {"r": 0}, "r must be > 0, got 0"),
        (LoraSpec, {"alpha": -4}, "alpha must be > 0, got -4"),
        (LoraSpec, {"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        (LoraSpec, {"dropout": -0.1}, "dropout must be in [0, 1), got -0.1"),
        (LoraSpec, {"target_modules": []}, "target_modules must name at least one module, got []"),
        (TrainSpec, {"r": 0, "max_steps": 1}, "r must be > 0, got 0"),
        (TrainSpec, {"learning_rate": -1e-4}, "learning_rate must be > 0, got -0.0001"),
        (TrainSpec, {"learning_rate": 0.0}, "learning_rate must be > 0, got 0.0"),
        (TrainSpec, {"max_steps": 0}, "max_steps must be > 0, got 0"),
        (TrainSpec, {"batch_size": -2}, "batch_size must be > 0, got -2"),
        (TrainSpec, {"grad_accum": 0}, "grad_accum must be > 0, got 0"),
        (TrainSpec, {"save_steps": 0}, "save_steps must be > 0, got 0"),
        (TrainSpec, {"logging_steps": 0}, "logging_steps must be > 0, got 0"),
        (TrainSpec, {"max_grad_norm": 0.0}, "max_grad_norm must be > 0, got 0.0"),
        (TrainSpec, {"warmup_steps": -1}, "warmup_steps must be >= 0, got -1"),
        (TrainSpec, {"weight_decay": -0.01}, "weight_decay must be >= 0, got -0.01"),
        (DataSpec, {"eval_fraction": 1.5}, "eval_fraction must be between 0 and 1 (exclusive), got 1.5"),
        (DataSpec, {"eval_fraction": 0.0}, "eval_fraction must be between 0 and 1 (exclusive), got 0.0"),
        (DataSpec, {"max_seq_len": 4}, "max_seq_len must be >= 8, got 4"),
        (DataSpec, {"max_rows": 0}, "max_rows must be > 0, got 0"),
        (EvalSpec, {"max_new_tokens": 0}, "max_new_tokens must be > 0, got 0"),
        (EvalSpec, {"batch_size": -1}, "batch_size must be > 0, got -1"),
        (RegistrySpec, {"alias": "bad alias"}, "alias must be letters, digits, '-' or '_', got 'bad alias'"),
        (RegistrySpec, {"alias": "champion!"}, "alias must be letters, digits, '-' or '_', got 'champion!'"),
        (RegistrySpec, {"model_name": "   "}, "model_name must not be empty"),
    ],
)
def test_validators_name_the_field_and_the_value(cls, fields, message):
    text = error_of(cls, **fields)
    assert message in text
    assert next(iter(fields)) in text  # pydantic also heads the error with the field (or the model)


def test_unknown_literals_are_rejected_with_the_allowed_values():
    text = error_of(QuantSpec, quant_type="int3")
    assert "quant_type" in text and "'int3'" in text and "'nf4' or 'fp4'" in text
    assert "compute_dtype" in error_of(QuantSpec, compute_dtype="int8")
    assert "'auto', 'alpaca', 'chat', 'sharegpt', 'prompt_completion' or 'text'" in error_of(DataSpec, format="xml")
    assert "lr_scheduler" in error_of(TrainSpec, lr_scheduler="exponential")


def test_defaults_are_valid_and_follow_qlora():
    quant, train = QuantSpec(), TrainSpec(max_steps=1)  # how long to train has no default (tests/ops/train/test_spec.py)
    assert (quant.quant_type, quant.double_quant, quant.compute_dtype) == ("nf4", True, "auto")
    assert (train.r, train.alpha, train.target_modules, train.optim) == (64, 16, ["all-linear"], "paged_adamw_32bit")
    assert DataSpec().eval_fraction == 0.1 and RegistrySpec().alias == "candidate"


def test_accepted_edge_values():
    assert LoraSpec(dropout=0.0).dropout == 0.0
    assert TrainSpec(max_steps=1, warmup_steps=0, weight_decay=0.0).warmup_steps == 0
    assert DataSpec(max_seq_len=8, max_rows=None).max_seq_len == 8
    assert RegistrySpec(alias="prod_v2-b").alias == "prod_v2-b"
    assert LoraSpec(target_modules=["q_proj", "v_proj"]).target_modules == ["q_proj", "v_proj"]
