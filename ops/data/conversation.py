"""A chat conversation as text segments, each flagged as a training target or not, with any chat template.

Templates seldom mark assistant turns (`{% generation %}` is rare), so turns are found by rendering: the
conversation is rendered up to each assistant turn (with the generation prompt, as inference renders it) and
through it (without), and every rendering must extend the one before it. What an assistant turn adds, cut after its
end-of-turn token (ops.data.chat_template.close_turn), is a target; everything else (system, user and tool turns,
the headers the template writes, whitespace after an end-of-turn token) is not.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from .chat_template import cut_after_end, end_of_turn_token

TrainOnTurns = Literal["all", "last"]
SNIPPET_CHARS = 40


class Segment(NamedTuple):
    """A piece of the text the model sees, and whether the loss is computed on its tokens."""

    text: str
    target: bool


class HistoryRewritten(ValueError):
    """The chat template renders earlier turns differently once later turns follow (e.g. it drops old reasoning)."""


def render_chat(messages: list[dict[str, Any]], tokenizer: Any, add_generation_prompt: bool) -> str:
    """The messages as the tokenizer's chat template writes them, as text."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_segments(messages: list[dict[str, Any]], tokenizer: Any, turns: TrainOnTurns = "all") -> list[Segment]:
    """The conversation up to its last assistant reply, as alternating non-target and target segments.

    Args:
        messages: a validated chat row's messages (role, content), ending with an assistant message.
        tokenizer: has the chat template; its end-of-turn token closes each target.
        turns: "all" makes every assistant turn a target; "last" only the last one (the rest is context).
    Returns:
        Segments whose texts join into the conversation as inference would render it before and after each
        trained reply: for "last", [prompt, reply], the prompt rendered with the generation prompt. Whitespace the
        template writes after the last reply is left out (the example ends at its stop token).
    Raises:
        HistoryRewritten: with "all", when rendering up to a later turn does not start with the rendering of the
            turns before it (templates that drop earlier reasoning, like Qwen3's, or move the system message).
        ValueError: a turn the template does not render as prompt + reply.
    """
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if turns == "last":
        replies = replies[-1:]
    end = end_of_turn_token(tokenizer)  # read once per conversation: it renders a probe turn
    segments: list[Segment] = []
    done = ""  # the text the segments hold so far
    rendered = ""  # the rendering through the previous trained turn, which the next must extend
    for i in replies:
        prompt = render_chat(messages[:i], tokenizer, add_generation_prompt=True)
        if not prompt.startswith(rendered):
            raise HistoryRewritten(_rewritten(rendered, prompt, i))
        full = render_chat(messages[: i + 1], tokenizer, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError("the tokenizer's chat template does not render the conversation as prompt + reply "
                             f"(message {i + 1})")
        reply = cut_after_end(full[len(prompt):], end)
        segments += [Segment(prompt[len(done):], False), Segment(reply, True)]
        done, rendered = prompt + reply, full
    return [s for s in segments if s.text or s.target]  # the last segment is always the last reply


def _rewritten(before: str, after: str, i: int) -> str:
    """One line saying where the rendering up to message i+1 stops extending the rendering before it."""
    at = next((k for k, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
    return (f"the chat template rewrites earlier turns: the prompt for the reply in message {i + 1} does not start "
            f"with the conversation as rendered through the reply before it (first difference at character {at}: "
            f"{before[at:at + SNIPPET_CHARS]!r} became {after[at:at + SNIPPET_CHARS]!r}); "
            "set train_on_turns: last to train on the last reply only")
