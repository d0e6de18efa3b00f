"""Prompt formats: how an example becomes (prompt, completion) text, and how a user prompt is rendered.

One module serves both training (data preparation) and inference (the registered pyfunc model), so a
model is always prompted the way it was trained.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .conversation import Segment, TrainOnTurns, chat_segments

FORMATS = ("alpaca", "chat", "prompt_completion", "text")

# The Stanford Alpaca template, the de-facto standard for instruction data in this format.
ALPACA_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"

REQUIRED_FIELDS = {
    "alpaca": ("instruction", "output"),
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}


def alpaca_prompt(instruction: str, input_text: str | None = None) -> str:
    if input_text:
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=input_text)
    return ALPACA_NO_INPUT.format(instruction=instruction)


def chat_prompt(messages: list[dict[str, str]], tokenizer: Any) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class Rendered(NamedTuple):
    """One row as training sees it: the text in target and non-target segments, and the (prompt, completion) pair
    evaluation generates from and compares with (for chat: everything before the last reply, and that reply)."""

    prompt: str
    completion: str
    segments: tuple[Segment, ...] = ()  # empty: the prompt, then the completion as the one target


def render_example(row: dict[str, Any], fmt: str, tokenizer: Any) -> tuple[str, str]:
    """Split one validated row into (prompt, completion) text; the completion is what the model learns.

    A chat row's prompt is the conversation before its last reply, rendered with the generation prompt (as serving
    renders it) and the completion that reply, ending at the template's end-of-turn token: whitespace the template
    writes after it is not part of the reply (ops.data.chat_template.close_turn).
    """
    rendered = render_training(row, fmt, tokenizer, turns="last")
    return rendered.prompt, rendered.completion


def render_training(row: dict[str, Any], fmt: str, tokenizer: Any, turns: TrainOnTurns = "all") -> Rendered:
    """One validated row as the segments training tokenizes, plus its (prompt, completion) pair.

    Args:
        row: a row validated for `fmt`.
        fmt: one of FORMATS.
        tokenizer: renders chat rows with its chat template.
        turns: chat only: "all" trains on every assistant turn, "last" on the last reply alone.
    Returns:
        Rendered; for formats other than chat, the segments are (prompt, not a target), (completion, a target).
    Raises:
        ValueError: an unknown format, or a chat row the template cannot render turn by turn
            (ops.data.conversation.HistoryRewritten when it rewrites earlier turns).
    """
    if fmt == "chat":
        segments = chat_segments(row["messages"], tokenizer, turns)
        prompt = "".join(s.text for s in segments[:-1])  # the last segment is the last reply, a target
        return Rendered(prompt, segments[-1].text, tuple(segments))
    if fmt == "alpaca":
        prompt, completion = alpaca_prompt(row["instruction"], row.get("input")), row["output"]
    elif fmt == "prompt_completion":
        prompt, completion = row["prompt"], row["completion"]
    elif fmt == "text":
        prompt, completion = "", row["text"]
    else:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return Rendered(prompt, completion, (Segment(prompt, False), Segment(completion, True)))


def render_user_prompt(text: str, fmt: str, tokenizer: Any) -> str:
    """Render a bare user prompt the way the model saw prompts during training (no input, no system message)."""
    return render_request({"prompt": text}, fmt, tokenizer)


# The fields a serving request may carry; which ones a model takes depends on its training format.
REQUEST_FIELDS = ("prompt", "instruction", "input", "system", "messages")
ACCEPTED = {
    "alpaca": ("instruction", "prompt", "input"),
    "chat": ("prompt", "instruction", "system", "messages"),
    "prompt_completion": ("prompt",),
    "text": ("prompt",),
}


def _given(value: Any) -> bool:
    """A request field counts when it is set: DataFrames fill absent fields of a row with None or NaN."""
    return value is not None and not (isinstance(value, float) and value != value)


def render_request(request: dict[str, Any], fmt: str, tokenizer: Any, default_system: str | None = None) -> str:
    """Render one serving request into the prompt text training rendered for a row of format `fmt`.

    Args:
        request: fields of one request (see `check_request`).
        fmt: the training data's format (one of FORMATS).
        tokenizer: the model's tokenizer (chat formats render with its chat template).
        default_system: the system message every training row had (chat only); used when the request has none.
    Returns:
        The prompt text, ending where the model's answer starts.
    Raises:
        ValueError: from `check_request`.
    """
    fields = check_request(request, fmt)
    if fmt == "chat":
        return chat_prompt(_conversation(fields, default_system), tokenizer)
    text = fields.get("instruction", fields.get("prompt"))
    return alpaca_prompt(text, fields.get("input")) if fmt == "alpaca" else text


def check_request(request: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The fields a request gives, checked against what format `fmt` takes (no model or tokenizer needed).

    alpaca: `instruction` (or `prompt`) and optional `input`; chat: `prompt` (or `instruction`) with an optional
    `system` message, or a whole `messages` conversation ending with a user turn; prompt_completion, text: `prompt`.
    Absent fields (None, or NaN where a DataFrame row leaves one out) do not count.
    Raises:
        ValueError: naming the field the format does not take, the one missing, or the one of the wrong type.
    """
    fields = {k: v for k, v in request.items() if _given(v)}
    if fmt not in ACCEPTED:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    unknown = sorted(set(fields) - set(ACCEPTED[fmt]))
    if unknown:
        raise ValueError(f"a model trained on {fmt} data does not take {', '.join(unknown)}; "
                         f"its request fields are {', '.join(ACCEPTED[fmt])}")
    if {"instruction", "prompt"} <= set(fields):
        raise ValueError("the request gives both instruction and prompt; they are the same field, give one")
    wrong = next((k for k, v in fields.items() if k != "messages" and not isinstance(v, str)), None)
    if wrong:
        raise ValueError(f"field {wrong!r} must be a string, got {type(fields[wrong]).__name__} "
                         "(send one record per request, not a column of values)")
    if "messages" in fields:
        _check_messages(fields)
    elif not {"instruction", "prompt"} & set(fields):
        expected = {"alpaca": "instruction (or prompt)", "chat": "prompt or messages"}.get(fmt, "prompt")
        raise ValueError(f"the request needs a string {expected}, got {sorted(fields) or 'no fields'}")
    return fields


def _check_messages(fields: dict[str, Any]) -> None:
    if {"prompt", "instruction"} & set(fields):
        raise ValueError("a chat request takes either messages or a prompt, not both")
    messages = list(fields["messages"])
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
               for m in messages):
        raise ValueError("messages must be a list of objects with string role and content")
    if not messages or messages[-1]["role"] != "user":
        raise ValueError(f"messages must end with a user message, got {messages[-1:] or 'none'}")
    if messages[0]["role"] == "system" and "system" in fields:
        raise ValueError("the request gives a system message twice: as system and in messages")


def _conversation(fields: dict[str, Any], default_system: str | None) -> list[dict[str, str]]:
    """The chat messages of a checked request: its `messages`, or its prompt, after its (or the default) system."""
    if "messages" in fields:
        messages = [{"role": m["role"], "content": m["content"]} for m in fields["messages"]]
        if messages[0]["role"] == "system":
            return messages
    else:
        messages = [{"role": "user", "content": fields.get("prompt", fields.get("instruction"))}]
    system = fields.get("system", default_system)
    return ([{"role": "system", "content": system}] if system is not None else []) + messages


def common_system_message(rows: list[dict[str, Any]], fmt: str) -> str | None:
    """The system message every row of a chat dataset starts with, when it is one and the same; else None.

    Serving uses it as the default, so a request without a system message is prompted as every training row was.
    """
    if fmt != "chat" or not rows:
        return None
    systems = {row["messages"][0]["content"] if row["messages"][0]["role"] == "system" else None for row in rows}
    return systems.pop() if len(systems) == 1 else None
