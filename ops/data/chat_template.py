"""What a chat template says about turns: the token that closes an assistant turn, where generation stops, and
the answer text of a completion.

Llama 3 closes a turn with `<|eot_id|>`, ChatML (Qwen2) with `<|im_end|>`, Gemma with `<end_of_turn>`, older
templates (Llama 2, Mistral, the embedded default) with eos itself. Tokenizer configs do not say which; the
template does, so the token is read off a rendered conversation instead of a table of model families.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError

# A reply no template rewrites: one lowercase word, nothing to trim, no markup.
PROBE_REPLY = "qloraprobereply"


def added_token_texts(tokenizer: Any) -> list[str]:
    """The text of every added or special token (chat markers are added tokens, not all "special" ones)."""
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def end_of_turn_token(tokenizer: Any) -> str | None:
    """The token the tokenizer's chat template puts right after an assistant reply (whitespace skipped).

    Renders one turn (a user message, then the assistant saying PROBE_REPLY) and returns the longest added or
    special token the text after the reply starts with: `<|eot_id|>` for Llama 3, `<|im_end|>` for ChatML,
    `<end_of_turn>` for Gemma, eos for templates that close turns with it.

    Returns None when there is no template, the template cannot render a user/assistant pair, or the reply is
    followed by plain text or nothing (then eos alone ends a completion).
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": PROBE_REPLY}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except TemplateError:  # e.g. a template that insists on a system message; eos still stops generation
        return None
    _, found, after = text.rpartition(PROBE_REPLY)
    if not found:
        return None
    after = after.lstrip()
    return next((t for t in added_token_texts(tokenizer) if after.startswith(t)), None)


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Token ids that end a completion: eos, the template's end-of-turn token, and any eos ids the model's
    generation config lists (Llama 3 instruct lists two). Order kept, no duplicates, possibly empty."""
    ids: list[int | None] = [tokenizer.eos_token_id]
    end = end_of_turn_token(tokenizer)
    if end is not None:
        ids.append(tokenizer.convert_tokens_to_ids(end))
    configured = getattr(generation_config, "eos_token_id", None)
    ids.extend(configured if isinstance(configured, (list, tuple)) else [configured])
    return list(dict.fromkeys(i for i in ids if i is not None))


def close_turn(completion: str, tokenizer: Any) -> str:
    """A rendered chat completion cut right after its end-of-turn token, when only whitespace follows it.

    Templates write a newline after the closing token (ChatML, Gemma, some `</s>\\n` ones); training on it would
    teach a token after the stop and, with eos appended, a second stop. Other completions come back unchanged.
    """
    return cut_after_end(completion, end_of_turn_token(tokenizer))


def cut_after_end(completion: str, end: str | None) -> str:
    """`completion` cut right after its last `end` token when only whitespace follows it; unchanged otherwise or
    when `end` is None (close_turn with the end-of-turn token already read)."""
    if end is None:
        return completion
    head, found, tail = completion.rpartition(end)
    return head + found if found and not tail.strip() else completion


def answer_text(token_ids: list[int], tokenizer: Any, stop_ids: list[int]) -> str:
    """The answer a completion's tokens carry: cut at the first stop token, special tokens dropped, stripped.

    Generated predictions and reference completions both go through this, so exact match and ROUGE-L compare
    the same kind of text whatever the template closes turns with.
    """
    stops = set(stop_ids)
    end = next((i for i, t in enumerate(token_ids) if t in stops), len(token_ids))
    return tokenizer.decode(list(token_ids[:end]), skip_special_tokens=True).strip()
