"""Sample generations a person can read: the question without its template, the reference beside the answers.

A held-out prompt is stored rendered (`### Instruction:` scaffolding, or chat-template markers). For reading, the
Alpaca sections come back as instruction and input, and a chat prompt as its last user message, the template's
markers read off a rendered probe conversation (as ops.data.chat_template reads the end-of-turn token).
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import TemplateError

from ..core.markdown import md_table
from ..data.chat_template import PROBE_REPLY, added_token_texts

ALPACA = re.compile(r"^### Instruction:\n(?P<instruction>.*?)\n\n(?:### Input:\n(?P<input>.*?)\n\n)?### Response:\n$",
                    re.DOTALL)
MATCH, MISS = "✓", "✗"
# Long enough for a paragraph of input; past it a cell is cut at a word and says how much is left out.
CELL_CHARS = 400
SAMPLE_COLUMNS = ("instruction", "input", "reference", "tuned", "match", "base")


def chat_markers(tokenizer: Any) -> tuple[str, str] | None:
    """(text that opens the last user message, text after it up to where the reply starts), from the template.

    E.g. ChatML gives (`<|im_start|>user\\n`, `<|im_end|>\\n<|im_start|>assistant\\n`); the opener starts at the last
    added or special token before the message. None when there is no template or it cannot render one user turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": PROBE_REPLY}], tokenize=False,
                                             add_generation_prompt=True)
    except TemplateError:
        return None
    before, found, after = text.rpartition(PROBE_REPLY)
    if not found:
        return None
    starts = [before.rfind(t) for t in added_token_texts(tokenizer) if t]
    return before[max([0, *starts]):], after


def readable_prompt(prompt: str, tokenizer: Any = None) -> tuple[str, str]:
    """(instruction, input) of a rendered held-out prompt, without template boilerplate.

    Alpaca prompts give their two sections (input "" when there is none); a chat prompt gives its last user message
    (input ""); any other prompt comes back whole with special-token texts removed, as (prompt, "").
    """
    alpaca = ALPACA.match(prompt)
    if alpaca:
        return alpaca["instruction"].strip(), (alpaca["input"] or "").strip()
    markers = chat_markers(tokenizer) if tokenizer is not None else None
    if markers and prompt.endswith(markers[1]):
        head = prompt[: len(prompt) - len(markers[1])]
        opener = head.rfind(markers[0])
        if opener >= 0:
            return head[opener + len(markers[0]):].strip(), ""
    text = prompt
    for token in added_token_texts(tokenizer) if tokenizer is not None else ():
        text = text.replace(token, " ")
    return text.strip(), ""


def clip_words(text: str, limit: int = CELL_CHARS) -> str:
    """`text` whole when it fits in `limit` characters, else cut at the last space before it, saying how much is left."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    cut = cut if cut > limit // 2 else limit
    return f"{text[:cut]} … (+{len(text) - cut} chars)"


def mark(hit: bool) -> str:
    return MATCH if hit else MISS


def sample_table_rows(samples: list[dict[str, str]]) -> list[dict[str, object]]:
    """The sample generations as table rows: `#`, instruction, input (when any row has one), reference, tuned, its
    exact-match mark and base, cells cut at a word. Older reports (prompt, reference, base, tuned) keep their columns."""
    if samples and "instruction" not in samples[0]:
        return samples
    columns = [c for c in SAMPLE_COLUMNS if c != "input" or any(s.get("input") for s in samples)]
    return [{"#": i, **{c: clip_words(s.get(c, "")) for c in columns}} for i, s in enumerate(samples, 1)]


def samples_markdown(samples: list[dict[str, str]]) -> str:
    """`sample_table_rows` as a Markdown table (the MLflow run's report.md)."""
    return md_table(sample_table_rows(samples), max_chars=CELL_CHARS + 20)