"""Tiny tokenizers whose chat templates have the shapes of real families, and a tiny model trained on them.

Each tokenizer is the embedded byte-level BPE (ops.model.embedded.build_tokenizer) with the family's special tokens
added and a template of the family's shape: where bos goes, which token closes a turn, what follows it.
"""

from __future__ import annotations

from ops.core.paths import BUNDLED_DATASET
from ops.data.tokens import IGNORE_INDEX, pad_batch, with_bos
from ops.model.embedded import build_tokenizer, corpus
from tests.tiny import TINY_ARCH

# family: (special tokens to set or add, template, the token that closes an assistant turn)
FAMILIES = {
    # Llama 3: bos rendered by the template, turns closed by <|eot_id|>, eos <|end_of_text|> never in a turn.
    "llama3": (
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
         "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
        " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        "<|eot_id|>",
    ),
    # ChatML (Qwen2 base): no bos, eos <|endoftext|>, turns closed by <|im_end|> and a newline.
    "chatml": (
        {"eos_token": "<|endoftext|>", "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]},
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "<|im_end|>",
    ),
    # Gemma: bos in the template, the assistant is "model", turns closed by <end_of_turn> and a newline.
    "gemma": (
        {"bos_token": "<bos>", "eos_token": "<eos>", "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]},
        "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
        "<end_of_turn>",
    ),
    # Phi-3 shape, the case: every turn closed by <|end|> while eos is </s>.
    "end": (
        {"additional_special_tokens": ["<|end|>"]},
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
        "<|end|>",
    ),
    # Turns closed by eos and then a newline: the template that gave targets `red </s> \n </s>`.
    "eos_newline": (
        {},
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '</s>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
        "</s>",
    ),
}
NOUNS = ("apple", "river", "stone", "tiger", "zebra", "bridge", "quartz", "hammer", "desert", "forest",
         "cloud", "lamp", "violin", "garden", "rocket", "pepper", "candle", "island", "mirror", "ladder")


def chat_tokenizer(family: str):
    """The embedded BPE tokenizer dressed as `family` (a FAMILIES key)."""
    tokens, template, _ = FAMILIES[family]
    tok = build_tokenizer(corpus(BUNDLED_DATASET), 1024)
    tok.add_special_tokens(tokens)
    if family == "chatml":
        tok.bos_token = None  # Qwen2 has no bos
    tok.chat_template = template
    return tok


def red_conversations(turns: int = 1) -> list[list[dict[str, str]]]:
    """Conversations whose assistant always answers `red`, `turns` question/answer pairs each, all distinct."""
    def turn(i: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"What color is the {NOUNS[i % len(NOUNS)]}?"},
                {"role": "assistant", "content": "red"}]

    return [[m for k in range(turns) for m in turn(i + 7 * k)] for i in range(len(NOUNS))]


def tiny_model(tokenizer, seed: int = 0):
    """A seeded random 2-layer, 64-wide Llama sized to `tokenizer` (torch is imported here: the tokenizer
    tests need none)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TINY_ARCH, max_position_embeddings=256, vocab_size=len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def train(model, rows: list[dict[str, list[int]]], pad_id: int, steps: int = 40, lr: float = 1e-2) -> float:
    """Full fine-tuning on `rows` (input_ids, labels), all rows each step; return the last loss."""
    import torch

    batch = pad_batch(rows, pad_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return loss.item()


def as_lm_rows(texts: list[str], tokenizer) -> list[dict[str, list[int]]]:
    """Plain language-model rows: every token but bos is a target."""
    rows = []
    for text in texts:
        ids = with_bos(tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"])
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] + ids[1:]})
    return rows
