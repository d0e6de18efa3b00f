"""The evaluation op on a real tiny setup: an embedded Llama quantized to NF4, a prepared dataset, a LoRA adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model

from ops.core.paths import BUNDLED_DATASET
from ops.data.chat_template import answer_text, stop_token_ids
from ops.data.prompt_formats import render_example
from ops.data.spec import DataSpec
from ops.evaluation.evaluator import clean_reference, evaluate_adapter
from ops.evaluation.report import METRICS, EvaluationReport, report_table_md, write_report
from ops.evaluation.spec import EvalSpec
from ops.model.device import DeviceInfo
from ops.model.generation import encode_prompts, generate
from ops.model.loading import load_quantized_model, load_tokenizer
from tests.ops.chat_tokenizers import FAMILIES, chat_tokenizer
from tests.tiny import quantize_fp32

CPU = DeviceInfo("cpu", "test-cpu", torch.float32)
SPEC = EvalSpec(max_new_tokens=6, num_generation_examples=5, num_samples_shown=3, batch_size=4)
EVAL_ROWS = 10


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_base_dir) -> Path:
    """The embedded tiny Llama, quantized for real to NF4 with double quantization and fp32 compute."""
    out = tmp_path_factory.mktemp("quantized")
    quantize_fp32(tiny_base_dir, out)
    return out


def _tokenize(prompt: str, completion: str, tokenizer) -> dict:
    """One prepared row the way data preparation builds it: bos + prompt (masked), then completion + eos."""
    prompt_ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + completion_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [-100] * len(prompt_ids) + completion_ids, "prompt": prompt, "completion": completion}


@pytest.fixture(scope="module")
def dataset_dir(model_dir, tmp_path_factory) -> Path:
    """A prepared-dataset artifact as data preparation writes it: `<dir>/dataset` with train and eval splits."""
    tokenizer = load_tokenizer(model_dir)
    lines = BUNDLED_DATASET.read_text().splitlines()[: EVAL_ROWS + 4]
    rows = []
    for line in lines:
        prompt, answer = render_example(json.loads(line), "alpaca", tokenizer)
        rows.append(_tokenize(prompt, answer + tokenizer.eos_token, tokenizer))
    out = tmp_path_factory.mktemp("prepared")
    splits = {"train": rows[EVAL_ROWS:], "eval": rows[:EVAL_ROWS]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(out / "dataset")
    return out


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so it changes the model's outputs."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(load_quantized_model(model_dir, CPU), config)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def logged() -> list[str]:
    return []


@pytest.fixture(scope="module")
def report(model_dir, adapter_dir, dataset_dir, logged) -> dict:
    return evaluate_adapter(model_dir, adapter_dir, dataset_dir, SPEC, CPU, log=logged.append)


def _plain_loss(model, dataset_dir: Path) -> float:
    """Token-weighted mean of the model's own per-row loss (transformers shifts the labels itself)."""
    rows = datasets.load_from_disk(str(dataset_dir / "dataset"))["eval"]
    total, tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:
            out = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]]))
            n = sum(label != -100 for label in row["labels"][1:])
            total, tokens = total + out.loss.item() * n, tokens + n
    return total / tokens


def test_report_structure(report):
    for side in ("base", "tuned", "delta"):
        assert set(getattr(report, side).model_dump()) == {"eval_loss", "perplexity", "exact_match", "rouge_l"}
    assert report.eval_rows == EVAL_ROWS
    assert report.generation_rows == SPEC.num_generation_examples
    assert len(report.samples) == SPEC.num_samples_shown
    assert set(report.samples[0]) == {"prompt", "instruction", "input", "reference", "base", "tuned", "match"}
    assert report.samples[0]["prompt"].startswith("### Instruction:")
    assert (report.device, report.compute_dtype) == ("cpu", "float32")
    assert report.seconds > 0
    for k in METRICS:
        assert getattr(report.delta, k) == pytest.approx(getattr(report.tuned, k) - getattr(report.base, k))
    json.dumps(report.model_dump(mode="json"), allow_nan=False)  # plain JSON, no numpy or tensors


def test_references_drop_eos_and_whitespace(report, model_dir):
    first_output = json.loads(BUNDLED_DATASET.read_text().splitlines()[0])["output"]
    assert report.samples[0]["reference"] == first_output  # the eos text is gone, nothing else changed
    tokenizer = load_tokenizer(model_dir)
    assert clean_reference(" five</s>\n", tokenizer) == "five"
    assert clean_reference("five", tokenizer) == "five"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_references_are_cut_at_the_end_of_turn_like_predictions(family):
    """The issue's case: a template closing turns with <|end|> while eos is </s> gave references `red<|end|>`
    against generations `red`. Completions as data preparation writes them now, and as older artifacts hold
    them (closing token, then the template's newline), all come back as the answer a generation decodes to."""
    tok = chat_tokenizer(family)
    end = FAMILIES[family][2]
    generated = tok(f"red{end}\nuser turn", add_special_tokens=False)["input_ids"]
    assert answer_text(generated, tok, stop_token_ids(tok)) == "red"
    for completion in (f"red{end}", f"red{end}\n", f"red{end}{tok.eos_token}"):
        assert clean_reference(completion, tok) == "red"


def test_perplexity_is_exp_loss(report):
    for side in ("base", "tuned"):
        assert getattr(report, side).perplexity == pytest.approx(math.exp(getattr(report, side).eval_loss), rel=1e-9)
        assert 0.0 <= getattr(report, side).exact_match <= 1.0 and 0.0 <= getattr(report, side).rouge_l <= 1.0


def test_base_loss_matches_a_plain_forward_pass(report, model_dir, dataset_dir):
    expected = _plain_loss(load_quantized_model(model_dir, CPU), dataset_dir)
    # A random 1k-token Llama sits near ln(vocab); the padded, batched loss must agree with the unpadded one.
    assert report.base.eval_loss == pytest.approx(expected, rel=1e-4)
    assert 5.0 < expected < 9.0


def test_adapter_changes_the_numbers(report):
    assert abs(report.delta.eval_loss) > 1e-3
    assert any(s["base"] != s["tuned"] for s in report.samples) or report.delta.rouge_l != 0


def test_progress_is_logged(report, logged):
    assert any(line.startswith("base: loss ") for line in logged)
    assert any(line.startswith("tuned: loss ") and "rouge_l" in line for line in logged)


def test_batched_generation_equals_one_at_a_time(model_dir, report):
    """Left padding must not change what a prompt generates."""
    tokenizer = load_tokenizer(model_dir)
    model = load_quantized_model(model_dir, CPU)
    prompts = [s["prompt"] for s in report.samples] + ["### Instruction:\nSay hi.\n\n### Response:\n"]
    batched = generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=4)
    single = generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=1)
    assert batched == single and len(batched) == len(prompts)
    assert all(isinstance(t, str) and t == t.strip() for t in batched)
    assert [s["base"] for s in report.samples] == generate(model, tokenizer, prompts[:3], SPEC.max_new_tokens, 2)


def test_prompts_are_encoded_as_training_saw_them(model_dir):
    """Generation must see the prompt tokens data preparation trained on (bos included), or scores are off."""
    data_prep = pytest.importorskip("ops.data.preparation")
    tokenizer = load_tokenizer(model_dir)
    prompt = "### Instruction:\nGive the first word.\n\n### Input:\nbridge quartz\n\n### Response:\n"
    (example,), _ = data_prep.tokenize_pairs([(prompt, "bridge")], tokenizer, DataSpec())
    n_prompt = sum(label == -100 for label in example["labels"])
    assert encode_prompts(tokenizer, [prompt]) == [list(example["input_ids"][:n_prompt])]
    assert encode_prompts(tokenizer, [prompt])[0][0] == tokenizer.bos_token_id


def test_report_table_and_json(report, tmp_path):
    table = report_table_md(report)
    assert table.splitlines()[0] == "| metric | base | tuned | delta |"
    assert len(table.splitlines()) == 2 + 4 and "| perplexity |" in table
    path = write_report(report, tmp_path / "sub" / "report.json")
    assert EvaluationReport.model_validate(json.loads(path.read_text())) == report


def test_phases_say_where_the_time_went(report):
    phases = report.phases
    for side in ("base", "tuned"):
        assert phases[f"{side}.loss_s"] > 0 and phases[f"{side}.generate_s"] > 0
        # every generated token is counted, at most max_new_tokens a row, at least one (a stop counts)
        assert SPEC.num_generation_examples <= phases[f"{side}.generated_tokens"] <= (
            SPEC.num_generation_examples * SPEC.max_new_tokens)
    assert 0 < phases["load_s"] < report.seconds


def test_loss_from_memory_sized_batches_equals_small_batches(model_dir, dataset_dir):
    """Batches sized from memory run longest first; the token-weighted loss must not depend on either."""
    from ops.evaluation.evaluator import load_eval_split, target_loss

    model, rows = load_quantized_model(model_dir, CPU), load_eval_split(dataset_dir)
    pad_id = load_tokenizer(model_dir).pad_token_id
    auto, tokens = target_loss(model, rows, pad_id, batch_size=None)
    small, small_tokens = target_loss(model, rows, pad_id, batch_size=3)
    assert tokens == small_tokens and auto == pytest.approx(small, rel=1e-5)


def test_memory_sized_generation_equals_one_at_a_time_in_input_order(model_dir):
    """Prompts of different lengths run longest first in one batch and come back in the order given."""
    tokenizer = load_tokenizer(model_dir)
    model = load_quantized_model(model_dir, CPU)
    prompts = ["### Instruction:\nSay hi.\n\n### Response:\n",
               "### Instruction:\nCount the words.\n\n### Input:\nred blue green yellow black\n\n### Response:\n",
               "Hi", "### Instruction:\nGive the last word.\n\n### Input:\nriver stone\n\n### Response:\n"]
    assert generate(model, tokenizer, prompts, 5, batch_size=None) == generate(model, tokenizer, prompts, 5, batch_size=1)
