"""The embedded base: deterministic to the byte, with a byte-level tokenizer and a chat template that fits training."""

from __future__ import annotations

import json

from ops.core.fingerprint import file_checksums, hash_tree
from ops.data.prompt_formats import render_example
from ops.model.embedded import SPECIAL_TOKENS, build_embedded_base
from ops.model.loading import load_tokenizer

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "apple"},
]


def test_building_twice_gives_identical_files(tmp_path):
    a = build_embedded_base(tmp_path / "a", arch=SMALL)
    b = build_embedded_base(tmp_path / "b", arch=SMALL)
    assert hash_tree(a) == hash_tree(b)
    assert file_checksums(a) == file_checksums(b)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(file_checksums(a))
    assert hash_tree(build_embedded_base(tmp_path / "c", arch=SMALL, seed=1)) != hash_tree(a)  # the seed matters


def test_config_matches_the_tokenizer(tiny_base_dir):
    config = json.loads((tiny_base_dir / "config.json").read_text())
    tok = load_tokenizer(tiny_base_dir)
    assert config["model_type"] == "llama" and config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert config["vocab_size"] == len(tok) <= 1024
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert config["tie_word_embeddings"] is True  # tied, so a frozen random model maps a token back to itself
    assert tok.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == SPECIAL_TOKENS


def test_tokenizer_round_trips_any_text(tiny_base_dir):
    tok = load_tokenizer(tiny_base_dir)
    for text in ["### Instruction:\nRepeat the words exactly.\n\n### Response:\napple river",
                 "Ünïcödé ✓ 数字 42\ttabs  and  spaces", ""]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids  # byte-level: nothing is unknown
        assert tok.decode(ids) == text
    # it adds no bos itself: data_prep and generation prepend bos explicitly, the same way for any tokenizer
    assert tok("hi")["input_ids"] == tok("hi", add_special_tokens=False)["input_ids"]
    assert len(tok("### Instruction:\n", add_special_tokens=False)["input_ids"]) < len("### Instruction:\n")  # merges learned


def test_chat_template_renders_the_prompt_as_a_prefix_of_the_conversation(tiny_base_dir):
    tok = load_tokenizer(tiny_base_dir)
    prompt = tok.apply_chat_template(CONVERSATION[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert prompt == "<|system|>\nYou are terse.\n<|user|>\nName a fruit.\n<|assistant|>\n"
    assert full == prompt + "apple</s>"
    assert render_example({"messages": CONVERSATION}, "chat", tok) == (prompt, "apple</s>")
