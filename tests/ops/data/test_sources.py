"""Loading and checking raw examples: every file type, format detection, and a clear error per bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops.core.paths import BUNDLED_DATASET, REPO_ROOT
from ops.data.sources import DataError, detect_format, load_rows, source_identity, validate_rows
from ops.data.spec import DataSpec
from ops.data.synthetic import generate, write_jsonl

ALPACA = [
    {"instruction": "Give the first word.", "input": "apple river", "output": "apple"},
    {"instruction": "Say hi.", "output": "hi"},
]
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load(path: Path) -> list[dict]:
    return load_rows(DataSpec(source=str(path)))


def test_shipped_data_matches_the_generator(tmp_path):
    write_jsonl(generate(), tmp_path / "instructions.jsonl")
    assert (tmp_path / "instructions.jsonl").read_bytes() == BUNDLED_DATASET.read_bytes()


def test_bundled_source_loads_alpaca_rows():
    rows = load_rows(DataSpec())
    assert len(rows) == 1500
    assert detect_format(rows) == "alpaca"
    validate_rows(rows, "alpaca")


def test_jsonl_skips_blank_lines_and_keeps_line_separators_inside_strings(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a\u2028b"}\n\n{"text": "c"}\r\n')
    assert load(path) == [{"text": "a\u2028b"}, {"text": "c"}]


def test_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ALPACA, indent=2))
    assert load(path) == ALPACA


def test_json_object_at_top_level_is_rejected(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ALPACA}))
    with pytest.raises(DataError, match="expected a JSON array of objects"):
        load(path)


def test_csv_with_quoted_commas_and_newlines(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        writer.writerow(["a, b\nand c", "done"])
        writer.writerow(["x", "y"])
    rows = load(path)
    assert rows == [{"prompt": "a, b\nand c", "completion": "done"}, {"prompt": "x", "completion": "y"}]
    assert detect_format(rows) == "prompt_completion"


def test_csv_with_a_bom_and_a_surplus_cell(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbftext\nok\n\"a\",\"b\"\n")
    with pytest.raises(DataError, match=r"d\.csv, line 3: more cells than the header"):
        load(path)


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([CHAT, CHAT]), path)
    rows = load(path)
    assert rows == [CHAT, CHAT]
    assert detect_format(rows) == "chat"


@pytest.mark.parametrize("name,content,message", [
    ("d.parquet", "not parquet", r"could not read parquet file .*d\.parquet"),
    ("d.txt", "hello", r"unsupported extension '\.txt'; use one of \.jsonl, \.json, \.csv, \.parquet"),
    ("d.jsonl", '{"text": "a"}\n["text"]\n', r"d\.jsonl, line 2: expected a JSON object, got list"),
])
def test_a_bad_file_is_named_with_what_is_wrong(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset file .*nope\.jsonl does not exist"):
        load(tmp_path / "nope.jsonl")


def test_source_that_is_neither_file_nor_hub_id():
    with pytest.raises(DataError, match="neither 'bundled', an existing file, nor a hub id"):
        load_rows(DataSpec(source="bundle"))


@pytest.mark.parametrize("name,content", [("e.jsonl", ""), ("e.json", "[]"), ("e.csv", "text\n"), ("b.jsonl", "\n\n")])
def test_empty_dataset(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=rf"dataset .*{name} is empty"):
        load(tmp_path / name)


def test_truncated_jsonl_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ALPACA[0]) + "\n" + json.dumps(ALPACA[1]) + "\n" + json.dumps(ALPACA[0])[:20])
    with pytest.raises(DataError, match=r"d\.jsonl, line 3: invalid JSON .*truncated"):
        load(path)


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl is not valid UTF-8: byte offset 28"):
        load(path)


@pytest.mark.parametrize(
    "row,fmt",
    [(ALPACA[0], "alpaca"), (CHAT, "chat"), ({"prompt": "p", "completion": "c"}, "prompt_completion"), ({"text": "t"}, "text")],
)
def test_detect_format(row, fmt):
    assert detect_format([row]) == fmt


def test_detect_format_names_columns_and_expected_sets():
    with pytest.raises(DataError) as err:
        detect_format([{"question": "q", "answer": "a"}])
    assert "['answer', 'question']" in str(err.value)
    assert "alpaca (instruction, output[, input])" in str(err.value)
    assert "prompt_completion (prompt, completion)" in str(err.value)


def test_missing_field_names_row_and_field():
    rows = [ALPACA[0], {"instruction": "x"}]
    with pytest.raises(DataError, match=r"^row 2: missing required field 'output' \(format alpaca\)$"):
        validate_rows(rows, "alpaca")


@pytest.mark.parametrize(
    "row,fmt,problem",
    [
        ({"instruction": "x", "output": "  "}, "alpaca", "field 'output' is empty"),
        ({"instruction": "x", "output": 3}, "alpaca", "field 'output' must be a string, got int"),
        ({"instruction": "x", "input": 1, "output": "y"}, "alpaca", "field 'input' must be a string"),
        ({"messages": []}, "chat", "must be a non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "chat", "last message must have role 'assistant'"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "chat", "at least one message before"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}, "chat", "message 1 must be an object"),
        ({"messages": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "chat",
         "message 1 has ShareGPT's 'from' and 'value', not 'role' and 'content': set format: sharegpt"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "chat", "assistant) message is empty"),
    ],
)
def test_bad_rows(row, fmt, problem):
    with pytest.raises(DataError, match=r"row 1: .*" + re.escape(problem)):
        validate_rows([row], fmt)


def test_validation_error_can_name_the_dataset():
    with pytest.raises(DataError, match=r"^dataset d\.jsonl, row 1: missing required field 'text'"):
        validate_rows([{"txt": "a"}], "text", where="dataset d.jsonl")


def test_unknown_format_name():
    with pytest.raises(DataError, match=r"unknown data format 'oasst'; expected one of alpaca, chat, prompt_completion, text"):
        validate_rows([CHAT], "oasst")


def test_source_identity_follows_file_content(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", ALPACA)
    before = source_identity(DataSpec(source=str(path)))
    jsonl(path, ALPACA[:1])
    after = source_identity(DataSpec(source=str(path)))
    assert before["source"] == after["source"] == str(path)
    assert before["sha256"] != after["sha256"]
    assert source_identity(DataSpec())["source"] == "bundled"


def test_source_identity_of_a_hub_id():
    identity = source_identity(DataSpec(source="tatsu-lab/alpaca", hub_split="train[:1%]"))
    assert identity == {"source": "tatsu-lab/alpaca", "revision": "main", "split": "train[:1%]"}
    assert source_identity(DataSpec(source="tatsu-lab/alpaca", hub_revision="abc123"))["revision"] == "abc123"


@pytest.mark.slow  # starts a subprocess
def test_unreachable_hub_id_is_a_data_error():
    # offline mode makes the real load_dataset call fail at once instead of retrying DNS for ~25 s
    code = (
        "from ops.data.sources import DataError, load_rows\nfrom ops.data.spec import DataSpec\n"
        "try:\n    load_rows(DataSpec(source='nobody/no-such-dataset'))\nexcept DataError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "could not load hub dataset 'nobody/no-such-dataset' (split 'train', revision main)" in out.stdout
    assert "the hub could not be reached or the dataset was not found" in out.stdout


def test_a_row_longer_than_any_sane_limit_is_refused_by_number():
    from ops.data.sources import MAX_ROW_CHARS

    rows = [{"instruction": "Say it.", "output": "ok"}, {"instruction": "Say it.", "output": "x" * (MAX_ROW_CHARS + 1)}]
    with pytest.raises(DataError, match=r"row 2: row is 1,000,0\d\d characters long, over the limit of 1,000,000"):
        validate_rows(rows, "alpaca")


def test_a_folder_of_data_files_loads_in_name_order_and_is_fingerprinted_by_content(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(ALPACA[:1], folder / "a.jsonl")
    write_jsonl(ALPACA[1:], folder / "b.jsonl")
    (folder / "README.txt").write_text("not data")
    assert load_rows(DataSpec(source=str(folder))) == ALPACA
    before = source_identity(DataSpec(source=str(folder)))
    write_jsonl(ALPACA, folder / "b.jsonl")
    assert source_identity(DataSpec(source=str(folder))) != before
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"dataset folder .*empty holds no .jsonl/.json/.csv/.parquet files"):
        load_rows(DataSpec(source=str(empty)))
