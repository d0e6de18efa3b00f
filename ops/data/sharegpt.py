"""ShareGPT rows (`conversations` of {from, value}) as `chat` rows (`messages` of {role, content}).

Converted when loaded, so rendering, masking and serving only ever see the chat format. The role names follow
the ShareGPT exports and LLaMA-Factory's sharegpt layout (human/gpt/system, function_call/observation for tools).
"""

from __future__ import annotations

from typing import Any

# ShareGPT speaker -> chat role. A function_call is the assistant asking for a tool (its text is the call); an
# observation is the tool's answer. user/assistant/tool appear in some exports as they are.
ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "function_call": "assistant",
    "system": "system",
    "tool": "tool", "observation": "tool", "function": "tool",
}
FIELD = "conversations"


def _turn(turn: Any, n: int) -> dict[str, str]:
    if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
        raise ValueError(f"conversation turn {n} must be an object with string 'from' and 'value'")
    role = ROLES.get(turn["from"].lower())
    if role is None:
        raise ValueError(f"conversation turn {n} is from {turn['from']!r}; the ShareGPT speakers are "
                         f"{', '.join(ROLES)}")
    return {"role": role, "content": turn["value"]}


def to_chat(row: dict[str, Any]) -> dict[str, Any]:
    """One ShareGPT row as a chat row: `messages` in place of `conversations` (and a top-level `system` string).

    Other columns are kept (they are reported as unused later). Consecutive turns stay as they are; the chat
    checks then judge the conversation (the last turn must be the assistant's).
    Raises:
        ValueError: naming the turn that is not {from, value} or whose speaker is unknown.
    """
    turns = row.get(FIELD)
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"field {FIELD!r} must be a non-empty list of {{from, value}} objects")
    messages = [_turn(t, n) for n, t in enumerate(turns, 1)]
    system = row.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    rest = {k: v for k, v in row.items() if k not in (FIELD, "system")}
    return {**rest, "messages": messages}
