"""The embedded default base model: a small Llama built locally from a seeded config, with its own tokenizer.

No model hub is reachable on CI or an offline laptop, so the default base is built here: a byte-level
BPE tokenizer trained on the bundled data (with a chat template) and a randomly initialised Llama. Both
are deterministic, so the same code builds the same files, and the result is cached under the data home.
"""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

from ..core.code_version import code_version
from ..core.paths import BUNDLED_DATASET

if TYPE_CHECKING:  # the libraries load in the builders: the embedded id and builder_version are wanted without them
    from transformers import PreTrainedTokenizerFast

EMBEDDED_ID = "embedded:tiny-llama"
# What decides the built files besides the data: torch and transformers initialise the weights, tokenizers
# trains the BPE merges.
BUILDER_LIBRARIES = ("tokenizers", "torch", "transformers")
# The tokenizer is trained on the bundled rows in the alpaca layout, frozen here rather than taken from
# ops/data/prompt_formats.py: the base stands in for a pretrained model, whose tokenizer does not change when the
# fine-tuning prompt format does (and so the 4-bit base stays cached when the prompt format changes).
CORPUS_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
CORPUS_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '</s>' }}{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
# Big enough to learn the bundled tasks through LoRA, small enough to train in minutes on two CPU cores.
DEFAULT_ARCH = dict(vocab_size=1024, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                    # Tied input/output embeddings (as in Llama 3.2 1B/3B): a frozen random model then maps a
                    # token back to itself, so LoRA on the attention can learn to copy and rearrange words.
                    tie_word_embeddings=True)


def builder_version() -> str:
    """The code version of this builder: this module's source and what it imports, and the library versions
    that decide the built files (ops/core/code_version.py). It names the cached build's folder."""
    return code_version([Path(__file__)], BUILDER_LIBRARIES)


def corpus(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(CORPUS_WITH_INPUT if r.get("input") else CORPUS_NO_INPUT).format(instruction=r["instruction"],
                                                                             input=r.get("input")) + r["output"]
            for r in rows]


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # byte-level: any text, no unknowns
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_embedded_base(out_dir: Path, arch: dict | None = None, seed: int = 0, data: Path = BUNDLED_DATASET) -> Path:
    """Write a tokenizer and a seeded random Llama (safetensors) to `out_dir`; return it."""
    import torch  # here, not at the top: the tokenizer and the embedded id are wanted without torch
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = {**DEFAULT_ARCH, **(arch or {})}
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(corpus(data), arch["vocab_size"])
    config = LlamaConfig(
        **{**arch, "vocab_size": len(tokenizer)},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
