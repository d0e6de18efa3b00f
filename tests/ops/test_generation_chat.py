"""Generation and evaluation on chat models whose turns end with a token that is not eos.

Each model is a tiny Llama fully trained for 60 steps on two-turn conversations whose assistant always says
`red`, so after `red<end-of-turn>` it goes on to write the next user turn, as chat models do when nothing stops
them. Only the template's end-of-turn token can stop it in time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ops.base_model import resolve_base
from ops.data_prep import prepare_dataset
from ops.device import DeviceInfo
from ops.evaluation import evaluate_adapter
from ops.generation import generate, generate_batch
from ops.modeling import load_quantized_model
from ops.prompting import chat_prompt
from ops.quantize import quantize_base
from ops.specs import DataSpec, EvalSpec, QuantSpec
from tests.ops.chat_tokenizers import as_lm_rows, chat_tokenizer, red_conversations, tiny_model, train

CPU = DeviceInfo("cpu", "test-cpu", torch.float32)
FAMILIES = ("llama3", "chatml", "gemma", "end")  # every shape whose end-of-turn token is not eos


@pytest.fixture(scope="module")
def trained():
    """family -> (model, tokenizer), trained on first use and kept for the module."""
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            tok = chat_tokenizer(family)
            tok.pad_token = tok.pad_token or tok.eos_token
            texts = [tok.apply_chat_template(c, tokenize=False) for c in red_conversations(turns=2)]
            model = tiny_model(tok)
            loss = train(model, as_lm_rows(texts, tok), tok.pad_token_id, steps=60)
            assert loss < 0.5, f"{family}: the tiny model did not learn the conversations (loss {loss:.3f})"
            cache[family] = (model.eval(), tok)
        return cache[family]

    return get


def one_turn_prompts(tok, n: int = 4) -> list[str]:
    return [chat_prompt(c[:1], tok) for c in red_conversations()[:n]]


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_stops_at_the_end_of_turn_token(trained, family):
    model, tok = trained(family)
    prompts = one_turn_prompts(tok)
    # Stopped at eos alone, the model writes past its turn into the next user message.
    run_on = generate_batch(model, tok, prompts, max_new_tokens=12, stop_ids=[tok.eos_token_id])
    assert all(text.startswith("red") and len(text) > len("red") for text in run_on), run_on
    assert generate(model, tok, prompts, max_new_tokens=12, batch_size=3) == ["red"] * len(prompts)


def test_always_red_task_scores_full_marks(trained, tmp_path):
    """The issue's case end to end: <|end|> closes turns, eos is </s>, the answer is always `red`. Before, every
    generation was `red`, every reference `red<|end|>`, and exact match and ROUGE-L were 0.0."""
    model, tok = trained("end")
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    quantize_base(resolve_base(str(tmp_path / "base")), QuantSpec(), CPU, tmp_path / "quantized", log=lambda _: None)
    model_dir = tmp_path / "quantized" / "model"
    source = tmp_path / "red.jsonl"
    source.write_text("".join(json.dumps({"messages": c}) + "\n" for c in red_conversations()))
    prepare_dataset(DataSpec(source=str(source), eval_fraction=0.25), tok, tmp_path / "data", log=lambda _: None)
    # An adapter that changes nothing (LoRA B starts at zero): base and tuned are the trained model in 4-bit.
    peft_model = get_peft_model(load_quantized_model(model_dir, CPU), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")

    spec = EvalSpec(max_new_tokens=8, num_generation_examples=5, num_samples_shown=5, batch_size=8)
    report = evaluate_adapter(model_dir, tmp_path / "adapter", tmp_path / "data", spec, CPU, log=lambda _: None)
    assert {(s["reference"], s["tuned"]) for s in report["samples"]} == {("red", "red")}
    assert report["tuned"]["exact_match"] == 1.0 and report["tuned"]["rouge_l"] == 1.0
    assert report["base"]["exact_match"] == 1.0 and report["generation_rows"] == 5
