"""The base's evaluation kept apart from the adapter's: a second adapter on the same base and data reuses it."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ops.core.store import ArtifactStore
from ops.evaluation.base_cache import BASE_STEP, BaseCache, base_fingerprint
from ops.evaluation.evaluator import evaluate_adapter
from ops.evaluation.spec import EvalSpec
from ops.model.loading import load_quantized_model
from tests.ops.evaluation.test_evaluator import CPU, SPEC, adapter_dir, dataset_dir, model_dir  # noqa: F401

CODE = "evaluation-code-v1"


@pytest.fixture(scope="module")
def other_adapter_dir(model_dir, tmp_path_factory):  # noqa: F811
    """A second adapter on the same base, trained with other settings (r=2 instead of 4)."""
    torch.manual_seed(1)
    config = LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    out = tmp_path_factory.mktemp("adapter-r2")
    get_peft_model(load_quantized_model(model_dir, CPU), config).save_pretrained(out)
    return out


def _cache(store: ArtifactStore, spec: EvalSpec) -> BaseCache:
    return BaseCache(store, base_fingerprint(CODE, "base-fp", "data-fp", spec, CPU.type, CPU.dtype_name))


def test_second_adapter_reuses_the_base_entry_and_a_new_setting_recomputes_it(
        model_dir, adapter_dir, other_adapter_dir, dataset_dir, tmp_path):  # noqa: F811
    store = ArtifactStore(tmp_path)
    first_log, second_log, third_log = [], [], []
    first = evaluate_adapter(model_dir, adapter_dir, dataset_dir, SPEC, CPU, log=first_log.append,
                             base_cache=_cache(store, SPEC))
    assert not first.base_cache_hit and store.is_complete(BASE_STEP, first.base_fingerprint)
    assert any(line.startswith("base: loss ") for line in first_log) and first.phases["base.generate_s"] > 0

    second = evaluate_adapter(model_dir, other_adapter_dir, dataset_dir, SPEC, CPU, log=second_log.append,
                              base_cache=_cache(store, SPEC))
    assert second.base_cache_hit and second.base_fingerprint == first.base_fingerprint
    assert second.base == first.base  # identical numbers, read back from the entry
    assert [s["base"] for s in second.samples] == [s["base"] for s in first.samples]
    assert second.tuned != first.tuned  # the adapter's own side was scored
    # The base was not scored again: no base pass was logged or timed, the entry's seconds are reported as saved.
    assert not any(line.startswith("base: loss ") for line in second_log)
    assert any(line.startswith("cache hit: base_evaluation") for line in second_log)
    assert any(line.startswith("base (cached): loss ") for line in second_log)
    assert "base.loss_s" not in second.phases and "base.generate_s" not in second.phases
    assert second.phases["base.cached_s"] > 0 and second.phases["tuned.generate_s"] > 0

    longer = SPEC.model_copy(update={"max_new_tokens": SPEC.max_new_tokens + 2})
    third = evaluate_adapter(model_dir, other_adapter_dir, dataset_dir, longer, CPU, log=third_log.append,
                             base_cache=_cache(store, longer))
    assert not third.base_cache_hit and third.base_fingerprint != first.base_fingerprint
    assert any(line.startswith("base: loss ") for line in third_log)


def test_base_fingerprint_ignores_display_settings_and_follows_what_changes_numbers():
    key = lambda spec, dtype="float32", base="b": base_fingerprint(CODE, base, "d", spec, "cpu", dtype)  # noqa: E731
    assert key(SPEC) == key(SPEC.model_copy(update={"num_samples_shown": 1}))
    assert key(SPEC) != key(SPEC.model_copy(update={"num_generation_examples": 4}))
    assert key(SPEC) != key(SPEC, dtype="bfloat16")
    assert key(SPEC) != key(SPEC, base="another base")
