"""Serving renders a request exactly as training rendered the prompt of a row with the same fields."""

from __future__ import annotations

import json

import pytest

from ops.data.preparation import prepare_dataset
from ops.data.prompt_formats import common_system_message, render_example, render_request, render_user_prompt
from ops.data.spec import DataSpec

SYSTEM = "Answer with one word."
ALPACA_ROWS = [
    {"instruction": "How many animals are in the list?", "input": "tiger river zebra", "output": "two"},
    {"instruction": "Say yes.", "output": "yes"},
    {"instruction": "Say yes.", "input": "", "output": "yes"},
]


def chat_row(question: str, answer: str, system: str | None = SYSTEM) -> dict:
    head = [{"role": "system", "content": system}] if system is not None else []
    return {"messages": [*head, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.mark.parametrize("row", ALPACA_ROWS)
def test_alpaca_request_with_instruction_and_input_is_the_training_prompt(row, tokenizer):
    request = {k: row[k] for k in ("instruction", "input") if k in row}
    assert render_request(request, "alpaca", tokenizer) == render_example(row, "alpaca", tokenizer)[0]


def test_one_string_holding_instruction_and_input_is_not_the_training_prompt(tokenizer):
    """The README's old example: instruction and input sent as one instruction are prompted differently."""
    row = ALPACA_ROWS[0]
    joined = render_user_prompt(f"{row['instruction']}\n{row['input']}", "alpaca", tokenizer)
    assert joined != render_example(row, "alpaca", tokenizer)[0]
    assert render_request({"prompt": row["instruction"]}, "alpaca", tokenizer) == render_example(
        {"instruction": row["instruction"], "output": "x"}, "alpaca", tokenizer)[0]


def test_chat_request_gets_the_training_system_message_by_default(tokenizer):
    row = chat_row("Is a tiger an animal?", "yes")
    trained = render_example(row, "chat", tokenizer)[0]
    assert render_request({"prompt": "Is a tiger an animal?"}, "chat", tokenizer, default_system=SYSTEM) == trained
    assert render_request({"prompt": "Is a tiger an animal?", "system": SYSTEM}, "chat", tokenizer) == trained
    assert render_request({"messages": row["messages"][:-1]}, "chat", tokenizer) == trained
    assert render_request({"messages": row["messages"][1:-1]}, "chat", tokenizer, default_system=SYSTEM) == trained
    bare = render_request({"prompt": "Is a tiger an animal?"}, "chat", tokenizer)
    assert bare == render_example(chat_row("Is a tiger an animal?", "yes", system=None), "chat", tokenizer)[0]
    other = render_request({"prompt": "Is a tiger an animal?", "system": "Be brief."}, "chat", tokenizer,
                           default_system=SYSTEM)
    assert "Be brief." in other and SYSTEM not in other  # a request's own system message wins


def test_a_multi_turn_conversation_renders_as_training_rendered_it(tokenizer):
    row = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi."},
                        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Say yes."},
                        {"role": "assistant", "content": "yes"}]}
    assert render_request({"messages": row["messages"][:-1]}, "chat", tokenizer) == render_example(row, "chat", tokenizer)[0]


def test_absent_fields_of_a_dataframe_row_do_not_count(tokenizer):
    nan = float("nan")
    assert render_request({"instruction": "Say yes.", "input": nan, "messages": None, "system": nan},
                          "alpaca", tokenizer) == render_example(ALPACA_ROWS[1], "alpaca", tokenizer)[0]


@pytest.mark.parametrize("request_, fmt, message", [
    ({"prompt": "x", "system": "s"}, "alpaca", "does not take system"),
    ({"prompt": "x", "input": "y"}, "chat", "does not take input"),
    ({"instruction": "x"}, "text", "does not take instruction"),
    ({"input": "y"}, "alpaca", "needs a string instruction"),
    ({"system": "s"}, "chat", "needs a string prompt or messages"),
    ({"messages": [{"role": "user"}]}, "chat", "string role and content"),
    ({"instruction": "x", "prompt": "x"}, "alpaca", "both instruction and prompt"),
    ({"messages": [{"role": "user", "content": "x"}], "prompt": "x"}, "chat", "either messages or a prompt"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "chat",
     "must end with a user message"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}], "system": "s"}, "chat",
     "system message twice"),
    ({"prompt": "x"}, "nope", "unknown data format 'nope'"),
    ({"instruction": ["a", "b"]}, "alpaca", "field 'instruction' must be a string, got list"),
])
def test_requests_a_format_cannot_take_fail_naming_the_field(request_, fmt, message, tokenizer):
    with pytest.raises(ValueError, match=message):
        render_request(request_, fmt, tokenizer)


def test_common_system_message_only_when_every_row_has_the_same_one():
    assert common_system_message([chat_row("a", "b"), chat_row("c", "d")], "chat") == SYSTEM
    assert common_system_message([chat_row("a", "b"), chat_row("c", "d", system="Other.")], "chat") is None
    assert common_system_message([chat_row("a", "b"), chat_row("c", "d", system=None)], "chat") is None
    assert common_system_message([chat_row("a", "b", system=None)], "chat") is None
    assert common_system_message(ALPACA_ROWS, "alpaca") is None


def test_data_preparation_records_the_system_message_for_serving(tmp_path, tokenizer):
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(chat_row(f"Is {w} an animal?", "yes")) + "\n" for w in ("cat", "dog", "owl")))
    stats = prepare_dataset(DataSpec(source=str(src)), tokenizer, tmp_path / "out", log=lambda _: None)
    assert stats.format == "chat" and stats.system_message == SYSTEM
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"Say {w}.", "output": w}) + "\n" for w in ("a", "b", "c")))
    assert prepare_dataset(DataSpec(source=str(alpaca)), tokenizer, tmp_path / "out2",
                           log=lambda _: None).system_message is None
