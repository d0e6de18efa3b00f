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
from transformers import AutoModelForCausalLM, AutoTokenizer

from ops.data.preparation import prepare_dataset
from ops.data.prompt_formats import chat_prompt
from ops.data.spec import DataSpec
from ops.evaluation.evaluator import evaluate_adapter
from ops.evaluation.spec import EvalSpec
from ops.model.base_resolution import resolve_base
from ops.model.device import DeviceInfo
from ops.model.export import export_merged
from ops.model.generation import encode_prompts, generate, generate_batch
from ops.model.loading import load_quantized_model
from ops.model.quantize import quantize_base
from ops.model.spec import QuantSpec
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


@pytest.fixture(scope="module")
def red_artifacts(trained, tmp_path_factory) -> dict[str, Path]:
    """The `end` family's trained model as the pipeline's artifacts: 4-bit base, prepared chat data, and an adapter
    that changes nothing (LoRA B starts at zero), so base and tuned are the trained model in 4-bit."""
    model, tok = trained("end")
    root = tmp_path_factory.mktemp("always-red")
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    quantize_base(resolve_base(str(root / "base")), QuantSpec(), CPU, root / "quantized", log=lambda _: None)
    source = root / "red.jsonl"
    source.write_text("".join(json.dumps({"messages": c}) + "\n" for c in red_conversations()))
    prepare_dataset(DataSpec(source=str(source), eval_fraction=0.25), tok, root / "data", log=lambda _: None)
    model_dir = root / "quantized" / "model"
    peft_model = get_peft_model(load_quantized_model(model_dir, CPU), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(root / "adapter")
    return {"model": model_dir, "adapter": root / "adapter", "data": root / "data"}


def test_always_red_task_scores_full_marks(red_artifacts):
    """The issue's case end to end: <|end|> closes turns, eos is </s>, the answer is always `red`. Before, every
    generation was `red`, every reference `red<|end|>`, and exact match and ROUGE-L were 0.0."""
    spec = EvalSpec(max_new_tokens=8, num_generation_examples=5, num_samples_shown=5, batch_size=8)
    report = evaluate_adapter(red_artifacts["model"], red_artifacts["adapter"], red_artifacts["data"], spec, CPU,
                              log=lambda _: None)
    assert {(s["reference"], s["tuned"]) for s in report.samples} == {("red", "red")}
    assert report.tuned.exact_match == 1.0 and report.tuned.rouge_l == 1.0
    assert report.base.exact_match == 1.0 and report.generation_rows == 5


def test_exported_model_stops_at_the_end_of_turn_in_plain_transformers(red_artifacts, tmp_path):
    """The merged export's generation config lists the end-of-turn token, so `model.generate` stops there too."""
    summary = export_merged(red_artifacts["model"], red_artifacts["adapter"], tmp_path / "merged", CPU,
                            prompt_format="chat", max_new_tokens=8)
    assert summary.generation_agreement == 1.0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    end = tok.convert_tokens_to_ids("<|end|>")
    assert model.generation_config.eos_token_id == [tok.eos_token_id, end]
    prompt = torch.tensor(encode_prompts(tok, [chat_prompt(red_conversations()[0][:1], tok)]))
    out = model.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1]:]
    assert tok.decode(out) == "red<|end|>"
