"""Reading a chat template's end-of-turn token, and cutting answers at it, on tokenizers of real families' shapes."""

from __future__ import annotations

import pytest
from transformers import GenerationConfig

from ops.data.chat_template import answer_text, close_turn, end_of_turn_token, stop_token_ids
from tests.ops.chat_tokenizers import FAMILIES, chat_tokenizer


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_end_of_turn_token_is_read_off_the_template(family):
    tok = chat_tokenizer(family)
    expected = FAMILIES[family][2]
    assert end_of_turn_token(tok) == expected
    stops = stop_token_ids(tok)
    assert stops[0] == tok.eos_token_id and tok.convert_tokens_to_ids(expected) in stops
    assert len(stops) == len(set(stops)) == (1 if expected == tok.eos_token else 2)


def test_embedded_template_closes_turns_with_eos(tokenizer):
    assert end_of_turn_token(tokenizer) == "</s>"
    assert stop_token_ids(tokenizer) == [tokenizer.eos_token_id]


def test_no_template_or_an_unrenderable_one_means_eos_alone(tokenizer):
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>")
    assert end_of_turn_token(plain) is None and stop_token_ids(plain) == [plain.eos_token_id]
    plain.chat_template = "{{ raise_exception('a system message is required') }}"
    assert end_of_turn_token(plain) is None
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"  # plain text closes turns
    assert end_of_turn_token(plain) is None


def test_configured_eos_ids_stop_too():
    tok = chat_tokenizer("llama3")
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    config = GenerationConfig(eos_token_id=[tok.eos_token_id, eot, 7])
    assert stop_token_ids(tok, config) == [tok.eos_token_id, eot, 7]
    assert stop_token_ids(tok, GenerationConfig(eos_token_id=eot)) == [tok.eos_token_id, eot]


def test_close_turn_drops_only_whitespace_after_the_end_token():
    tok = chat_tokenizer("chatml")
    assert close_turn("red<|im_end|>\n", tok) == "red<|im_end|>"
    assert close_turn("red<|im_end|>", tok) == "red<|im_end|>"
    assert close_turn("red<|im_end|>\nmore", tok) == "red<|im_end|>\nmore"  # not a template's trailing space
    assert close_turn("red\n", tok) == "red\n"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_answer_text_cuts_at_the_first_stop(family):
    tok = chat_tokenizer(family)
    end = FAMILIES[family][2]
    ids = tok(f" red {end}\nmore words{tok.eos_token}", add_special_tokens=False)["input_ids"]
    assert answer_text(ids, tok, stop_token_ids(tok)) == "red"
    assert answer_text(tok("red", add_special_tokens=False)["input_ids"], tok, []) == "red"
