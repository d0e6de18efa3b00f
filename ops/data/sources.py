"""Load raw examples (the bundled set, a local file or a hub id) and check them before any tokenizing.

Every bad input raises `DataError` with one message naming the problem and where it is (file, line or
row, field), so a broken dataset fails the first step with something a person can act on.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from ..core.fingerprint import hash_file, hash_tree
from ..core.paths import BUNDLED_DATASET
from .prompt_formats import FORMATS, REQUIRED_FIELDS
from .sharegpt import FIELD as SHAREGPT_FIELD
from .spec import DataSpec, SourceSpec

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
UTF8_BOM = b"\xef\xbb\xbf"
# Far beyond any real example (a 1M-character row is ~250k tokens); such a row is an export bug, and
# tokenizing it would stall the step for minutes before truncation threw almost all of it away.
MAX_ROW_CHARS = 1_000_000
# Chat roles the pipeline can render and mask; `tool` also needs a template that knows it (ops/data/preparation.py).
CHAT_ROLES = ("system", "user", "assistant", "tool")
FORMAT_COLUMNS = ("alpaca (instruction, output[, input]), chat (messages), sharegpt (conversations), "
                  "prompt_completion (prompt, completion), text (text)")
# Detection order: the first format whose columns row 1 has.
DETECTED = (("chat", ("messages",)), ("sharegpt", (SHAREGPT_FIELD,)), ("alpaca", REQUIRED_FIELDS["alpaca"]),
            ("prompt_completion", REQUIRED_FIELDS["prompt_completion"]), ("text", REQUIRED_FIELDS["text"]))


class DataError(ValueError):
    """A dataset that cannot be used, with the file, line or row and field at fault."""


def resolve_source(source: str) -> Path | None:
    """The local file behind `source`, or None when it is a hub id."""
    if source == "bundled":
        return BUNDLED_DATASET
    path = Path(source).expanduser()
    if path.is_file() or path.is_dir():
        return path
    if source.startswith((".", "/", "~")) or path.suffix:
        raise DataError(f"dataset file {source} does not exist")
    if HUB_ID.match(source):
        return None
    raise DataError(f"dataset source {source!r} is neither 'bundled', an existing file, nor a hub id (owner/name)")


def _read_text(path: Path) -> str:
    """Decode a file as UTF-8 (a leading BOM is allowed), naming the byte offset of the first bad byte."""
    data = path.read_bytes()
    skip = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid UTF-8: byte offset {e.start + skip} ({e.reason})") from None


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def json_problem(error: json.JSONDecodeError) -> str:
    """json's message without its dangling position words ("Unterminated string starting at" -> "...string")."""
    return re.sub(r"( starting)? at$", "", error.msg)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    # split on "\n" only: str.splitlines would also split on U+2028 inside JSON strings
    for n, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append(_object(json.loads(line), f"{path}, line {n}"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {n}: invalid JSON at column {e.colno} ({json_problem(e)}); is the file truncated?") from None
    return rows


def _read_json(path: Path) -> list[dict]:
    text = _read_text(path)
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: invalid JSON at column {e.colno} ({json_problem(e)})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects at the top level, got {type(data).__name__}")
    return [_object(item, f"{path}, item {i}") for i, item in enumerate(data, 1)]


def _read_csv(path: Path) -> list[dict]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    rows = []
    try:
        for row in reader:
            if None in row:  # DictReader files surplus cells under the key None
                raise DataError(f"{path}, line {reader.line_num}: more cells than the header has columns")
            rows.append(row)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: unreadable CSV ({e})") from None
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several unrelated types (ArrowInvalid, OSError, ...)
        raise DataError(f"could not read parquet file {path}: {e}") from None


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def _load_hub(spec: DataSpec | SourceSpec) -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(spec.source, split=spec.hub_split, revision=spec.hub_revision).to_list()
    except Exception as e:  # offline, unknown id, unknown split or revision: all end the run the same way
        raise DataError(
            f"could not load hub dataset {spec.source!r} (split {spec.hub_split!r}, revision "
            f"{spec.hub_revision or 'main'}): the hub could not be reached or the dataset was not found "
            f"({type(e).__name__}: {e})"
        ) from None


def _read_file(path: Path) -> list[dict]:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"dataset file {path} has unsupported extension {path.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")
    return reader(path)


def load_rows(spec: DataSpec | SourceSpec) -> list[dict]:
    """Read every example of `spec.source` as a list of dicts; an empty dataset is an error."""
    path = resolve_source(spec.source)
    if path is None:
        rows = _load_hub(spec)
    elif path.is_dir():  # a folder of data files, read in name order (what the retraining sensor can watch)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in READERS)
        if not files:
            raise DataError(f"dataset folder {path} holds no {'/'.join(FILE_SUFFIXES)} files")
        rows = [row for f in files for row in _read_file(f)]
    else:
        rows = _read_file(path)
    if not rows:
        raise DataError(f"dataset {path or spec.source} is empty")
    return rows


def detect_format(rows: list[dict]) -> str:
    """Name the prompt format from the first row's columns."""
    if not rows:
        raise DataError("cannot detect the data format of an empty dataset")
    keys = set(rows[0])
    for fmt, fields in DETECTED:
        if set(fields) <= keys:
            return fmt
    raise DataError(
        f"cannot detect the data format from row 1's columns {sorted(keys)}; expected the columns of one of: "
        f"{FORMAT_COLUMNS}. Map your columns onto these (the columns setting) or set the format explicitly."
    )


def _check_messages(messages: Any) -> str | None:
    """Why a chat row's messages are unusable, or None."""
    if not isinstance(messages, list) or not messages:
        return "field 'messages' must be a non-empty list of {role, content} objects"
    for n, m in enumerate(messages, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            if isinstance(m, dict) and {"from", "value"} <= set(m):  # ShareGPT turns under a `messages` column
                return (f"message {n} has ShareGPT's 'from' and 'value', not 'role' and 'content': set format: "
                        "sharegpt (and map the column to 'conversations', not 'messages')")
            return f"message {n} must be an object with string 'role' and 'content'"
        if m["role"] not in CHAT_ROLES:
            return f"message {n} has role {m['role']!r}; the roles are {', '.join(CHAT_ROLES)}"
    if messages[-1]["role"] != "assistant":
        return f"the last message must have role 'assistant' (the reply to learn), got {messages[-1]['role']!r}"
    if len(messages) < 2:
        return "field 'messages' needs at least one message before the assistant reply"
    if not messages[-1]["content"].strip():
        return "the last (assistant) message is empty"
    return None


def _row_problem(row: Any, fmt: str) -> str | None:
    """Why one row is unusable in format `fmt`, or None."""
    if not isinstance(row, dict):
        return f"expected an object, got {type(row).__name__}"
    for field in REQUIRED_FIELDS[fmt]:
        if row.get(field) is None:
            return f"missing required field {field!r}"
    if fmt == "chat":
        return _check_messages(row["messages"])
    for field in REQUIRED_FIELDS[fmt] + (("input",) if fmt == "alpaca" else ()):
        value = row.get(field)
        if value is not None and not isinstance(value, str):
            return f"field {field!r} must be a string, got {type(value).__name__}"
    empty = [f for f in REQUIRED_FIELDS[fmt] if not row[f].strip()]
    if empty:
        return f"field {empty[0]!r} is empty"
    size = sum(len(v) for v in row.values() if isinstance(v, str))
    return f"row is {size:,} characters long, over the limit of {MAX_ROW_CHARS:,}" if size > MAX_ROW_CHARS else None


def unused_columns(rows: list[dict], fmt: str) -> list[str]:
    """Columns some row has that format `fmt` does not read (a saved index, ids, metadata), sorted."""
    used = set(REQUIRED_FIELDS[fmt]) | ({"input"} if fmt == "alpaca" else set())
    return sorted({key for row in rows for key in row} - used)


def validate_rows(rows: list[dict], fmt: str, where: str = "") -> None:
    """Check every row has the non-empty fields its format needs; the error names the row and field."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    prefix = f"{where}, " if where else ""
    for n, row in enumerate(rows, 1):
        problem = _row_problem(row, fmt)
        if problem:
            raise DataError(f"{prefix}row {n}: {problem} (format {fmt})")


def source_identity(spec: DataSpec | SourceSpec) -> dict:
    """What identifies the data's content, for the dataset's fingerprint: a file hash, or a hub id and revision;
    for a mixture, `{"mixture": [...]}` with one such identity per source, in order."""
    if isinstance(spec, DataSpec) and spec.mixture:
        return {"mixture": [source_identity(s) for s in spec.mixture]}
    path = resolve_source(spec.source)
    if path is None:
        return {"source": spec.source, "revision": spec.hub_revision or "main", "split": spec.hub_split}
    return {"source": spec.source, "sha256": hash_tree(path) if path.is_dir() else hash_file(path)}
