"""ShareGPT rows and column mapping: converted and renamed at load time, so the rest of preparation is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.data.mixture import read_source
from ops.data.preparation import load_prepared, prepare_dataset
from ops.data.sharegpt import to_chat
from ops.data.columns import apply_columns
from ops.data.sources import DataError, detect_format
from ops.data.spec import DataSpec, SourceSpec

COLORS = ("red", "green", "blue", "black", "white", "brown", "pink", "grey")


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sharegpt_rows(n: int) -> list[dict]:
    return [{"id": i, "system": "Answer with one word.", "conversations": [
        {"from": "human", "value": f"What is item {i}?"}, {"from": "gpt", "value": COLORS[i % len(COLORS)]},
        {"from": "human", "value": f"And item {i + 100}?"}, {"from": "gpt", "value": COLORS[(i + 3) % len(COLORS)]}]}
        for i in range(n)]


def test_sharegpt_roles_become_chat_roles_and_the_system_field_a_system_message():
    row = {"id": 7, "system": "Be brief.", "conversations": [
        {"from": "human", "value": "Weather?"}, {"from": "function_call", "value": '{"name": "weather"}'},
        {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]}
    assert to_chat(row) == {"id": 7, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": '{"name": "weather"}'}, {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."}]}


def test_a_sharegpt_system_turn_is_not_doubled_by_the_system_field():
    row = {"system": "ignored", "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                                                  {"from": "gpt", "value": "a"}]}
    assert [m["role"] for m in to_chat(row)["messages"]] == ["system", "user", "assistant"]


def test_sharegpt_is_detected_and_trains_as_chat(tmp_path, tokenizer):
    path = jsonl(tmp_path / "sg.jsonl", sharegpt_rows(12))
    assert detect_format(sharegpt_rows(1)) == "sharegpt"
    summary = prepare_dataset(DataSpec(source=str(path), max_seq_len=96), tokenizer, tmp_path / "out", log=lambda _: None)
    assert summary.format == "chat"  # what serving renders requests in
    assert summary.sources[0].format == "sharegpt" and summary.sources[0].rows == summary.rows == 12
    assert summary.system_message == "Answer with one word."
    assert summary.ignored_columns == ["id"]
    splits = load_prepared(tmp_path / "out")
    row = next(r for r in splits["train"] if "item 0?" in r["prompt"])
    assert "Answer with one word." in row["prompt"] and "item 100?" in row["prompt"]
    assert row["completion"].startswith("black")  # the last gpt turn: COLORS[3]


@pytest.mark.parametrize("turns,problem", [
    ([{"from": "wizard", "value": "x"}], "conversation turn 1 is from 'wizard'; the ShareGPT speakers are human"),
    ([{"from": "human", "value": 3}], "conversation turn 1 must be an object with string 'from' and 'value'"),
    ([], "field 'conversations' must be a non-empty list"),
])
def test_a_bad_sharegpt_row_is_named_by_file_and_row(tmp_path, turns, problem):
    path = jsonl(tmp_path / "sg.jsonl", sharegpt_rows(2) + [{"conversations": turns}])
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(source=str(path)))
    assert str(err.value).startswith(f"dataset {path}, row 3: {problem}")
    assert str(err.value).endswith("(format sharegpt)")


def test_a_sharegpt_conversation_ending_with_the_user_fails_the_chat_checks(tmp_path):
    path = jsonl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "q"}]}])
    with pytest.raises(DataError, match=r"row 1: the last message must have role 'assistant'.*\(format chat\)"):
        read_source(SourceSpec(source=str(path), format="sharegpt"))


def test_columns_are_renamed_before_the_format_is_detected(tmp_path, tokenizer):
    rows = [{"question": f"Spell {w}.", "answer": " ".join(w), "source_id": i} for i, w in enumerate(COLORS)]
    path = jsonl(tmp_path / "qa.jsonl", rows)
    spec = DataSpec(source=str(path), columns={"question": "instruction", "answer": "output"})
    summary = prepare_dataset(spec, tokenizer, tmp_path / "out", log=lambda _: None)
    assert summary.format == "alpaca" and summary.rows == len(COLORS)
    assert summary.ignored_columns == ["source_id"]
    splits = load_prepared(tmp_path / "out")
    pairs = {p: c for split in splits.values() for p, c in zip(split["prompt"], split["completion"])}
    assert pairs["### Instruction:\nSpell red.\n\n### Response:\n"] == "r e d"


def test_query_response_columns_map_onto_prompt_completion(tmp_path):
    path = jsonl(tmp_path / "qr.jsonl", [{"query": "2+2", "response": "4"}])
    part = read_source(SourceSpec(source=str(path), columns={"query": "prompt", "response": "completion"}))
    assert part.format == "prompt_completion" and part.rows == [{"prompt": "2+2", "completion": "4"}]


def test_a_mapped_column_that_no_row_has_is_named():
    with pytest.raises(DataError) as err:
        apply_columns([{"question": "q", "reply": "a"}], {"question": "instruction", "answer": "output"}, "dataset d.jsonl")
    assert str(err.value) == ("dataset d.jsonl: mapped column 'answer' (-> 'output') is in no row; its columns are "
                              "['question', 'reply']")


def test_a_mapping_onto_a_column_the_data_has_is_refused():
    with pytest.raises(DataError, match=r"columns maps 'question' to 'instruction', but the data already has a column "
                                        r"'instruction'"):
        apply_columns([{"question": "q", "instruction": "i", "output": "o"}], {"question": "instruction"}, "dataset d")


def test_columns_can_swap_two_names():
    rows = apply_columns([{"instruction": "a", "output": "b"}], {"instruction": "output", "output": "instruction"}, "d")
    assert rows == [{"output": "a", "instruction": "b"}]


def test_a_row_missing_a_mapped_column_is_named_by_its_row(tmp_path):
    path = jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}, {"answer": "b"}])
    with pytest.raises(DataError, match=rf"^dataset {path}, row 2: missing required field 'instruction' \(format alpaca\)$"):
        read_source(SourceSpec(source=str(path), columns={"question": "instruction", "answer": "output"}))


def test_two_columns_mapped_to_one_field_are_refused():
    with pytest.raises(DataError, match=r"^dataset d: columns maps 'q', 'question' all to 'instruction'; map one column"):
        apply_columns([{"q": "a", "question": "b", "output": "o"}], {"q": "instruction", "question": "instruction"},
                      "dataset d")
