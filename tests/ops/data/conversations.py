"""Multi-turn test conversations, the text each family's template should make of them (written out by hand, not
rendered), and a template that rewrites history the way Qwen3's drops earlier reasoning."""

from __future__ import annotations

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What color is the apple?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "And the river?"},
    {"role": "assistant", "content": "blue"},
    {"role": "user", "content": "Name both."},
    {"role": "assistant", "content": "red and blue"},
]

# family: (text before the first turn, a turn's header, the end-of-turn token, what the template writes after it);
# copied from the families' published templates, as tests/ops/chat_tokenizers.py shapes them.
SHAPES = {
    "llama3": ("<|begin_of_text|>", "<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>", ""),
    "chatml": ("", "<|im_start|>{role}\n", "<|im_end|>", "\n"),
    "gemma": ("<bos>", "<start_of_turn>{role}\n", "<end_of_turn>", "\n"),
}


def expected_pieces(family: str, messages: list[dict[str, str]], turns: str = "all") -> list[tuple[str, bool]]:
    """The conversation as (text, target) pieces: each trained assistant reply with its end-of-turn token is a
    target; headers, other turns and the whitespace after an end-of-turn token are not; nothing after the last reply."""
    start, header, end, after = SHAPES[family]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    pieces: list[tuple[str, bool]] = []
    context = start
    for i, m in enumerate(messages):
        role = "model" if family == "gemma" and m["role"] == "assistant" else m["role"]
        if m["role"] == "assistant" and (turns == "all" or i == last):
            pieces += [(context + header.format(role=role), False), (m["content"] + end, True)]
            context = after
        else:
            context += header.format(role=role) + m["content"] + end + after
    return pieces


def drops_earlier_reasoning(turn: str, generation_prompt: str) -> str:
    """A chat template that, like Qwen3's, drops the `<think>...</think>` part of assistant turns before the last
    user turn. `turn` is a Jinja expression of `m` (the message) and `content`; `generation_prompt` a literal."""
    return (
        "{% set ns = namespace(last_user=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
        "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}"
        "{% for m in messages %}{% set content = m['content'] %}"
        "{% if m['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content %}"
        "{% set content = content.split('</think>')[-1].lstrip() %}{% endif %}"
        "{{ " + turn + " }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + generation_prompt + "' }}{% endif %}"
    )


# On ChatML tokens, and on the embedded tokenizer's turn shape (tests/test_bad_inputs.py).
CHATML_DROPPING_REASONING = drops_earlier_reasoning(
    "'<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n'", "<|im_start|>assistant\\n")
EMBEDDED_DROPPING_REASONING = drops_earlier_reasoning(
    "'<|' + m['role'] + '|>\\n' + content + ('</s>' if m['role'] == 'assistant' else '\\n')", "<|assistant|>\\n")


def with_reasoning(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same conversation with a `<think>` block before the first assistant reply."""
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    thought = {"role": "assistant", "content": "<think>apples are red</think>\n" + messages[first]["content"]}
    return messages[:first] + [thought] + messages[first + 1:]
