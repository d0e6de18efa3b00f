"""Prompt formats: how an example becomes (prompt, completion) text, and how a user prompt is rendered.

One module serves both training (data preparation) and inference (the registered pyfunc model), so a
model is always prompted the way it was trained.
"""

from __future__ import annotations

from typing import Any

from .chat_template import close_turn

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


def render_example(row: dict[str, Any], fmt: str, tokenizer: Any) -> tuple[str, str]:
    """Split one validated row into (prompt, completion) text; the completion is what the model learns.

    A chat completion ends at the template's end-of-turn token: whitespace the template writes after it is not
    part of the reply (ops.chat_template.close_turn).
    """
    if fmt == "alpaca":
        return alpaca_prompt(row["instruction"], row.get("input")), row["output"]
    if fmt == "chat":
        messages = row["messages"]
        prompt = chat_prompt(messages[:-1], tokenizer)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the tokenizer's chat template does not render the conversation as prompt + reply")
        return prompt, close_turn(full[len(prompt):], tokenizer)
    if fmt == "prompt_completion":
        return row["prompt"], row["completion"]
    if fmt == "text":
        return "", row["text"]
    raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")


def render_user_prompt(text: str, fmt: str, tokenizer: Any) -> str:
    """Render a bare user prompt the way the model saw prompts during training."""
    if fmt == "alpaca":
        return alpaca_prompt(text)
    if fmt == "chat":
        return chat_prompt([{"role": "user", "content": text}], tokenizer)
    return text
