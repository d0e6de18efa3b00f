"""A mixture of sources: shares and row limits drawn exactly and by seed, one fingerprint over all, counts per source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ops.data.mixture import allocate, draw_counts, load_parts
from ops.data.preparation import load_prepared, prepare_dataset
from ops.data.sources import DataError, source_identity
from ops.data.spec import DataSpec, SourceSpec


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alpaca(n: int, tag: str = "a") -> list[dict]:
    return [{"instruction": f"Repeat {tag}{i}.", "output": f"{tag}{i}"} for i in range(n)]


def qa(n: int) -> list[dict]:
    return [{"question": f"What is {i} plus one?", "answer": str(i + 1)} for i in range(n)]


def sharegpt(n: int) -> list[dict]:
    return [{"conversations": [{"from": "human", "value": f"Name colour {i}."}, {"from": "gpt", "value": f"c{i}"}]}
            for i in range(n)]


@pytest.fixture
def two_files(tmp_path) -> tuple[Path, Path]:
    return jsonl(tmp_path / "a.jsonl", alpaca(60)), jsonl(tmp_path / "qa.jsonl", qa(40))


def mixture(a: Path, b: Path, **kw) -> list[dict]:
    return [{"source": str(a), **kw.get("first", {})},
            {"source": str(b), "columns": {"question": "instruction", "answer": "output"}, **kw.get("second", {})}]


def test_allocate_splits_a_total_exactly():
    assert allocate(100, [0.7, 0.3]) == [70, 30]
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(allocate(97, [0.33, 0.33, 0.34])) == 97


def test_draw_counts_by_share_is_limited_by_the_scarcest_source():
    shares = [SourceSpec(source="x", share=0.75), SourceSpec(source="y", share=0.25)]
    assert draw_counts([60, 40], shares, None) == [60, 20]  # 60 rows is 75% of 80
    assert draw_counts([600, 10], shares, None) == [30, 10]  # 10 rows is 25% of 40
    assert draw_counts([60, 40], shares, 40) == [30, 10]
    assert draw_counts([30, 70], [SourceSpec(source="x", share=0.3), SourceSpec(source="y", share=0.7)], None) == [30, 70]


def test_draw_counts_by_row_limit_scales_down_to_the_total_cap():
    limits = [SourceSpec(source="x", max_rows=50), SourceSpec(source="y")]
    assert draw_counts([60, 40], limits, None) == [50, 40]
    assert draw_counts([60, 40], limits, 45) == [25, 20]


def test_a_two_source_mixture_by_share_keeps_its_shares(two_files, tokenizer, tmp_path):
    a, b = two_files
    spec = DataSpec(mixture=mixture(a, b, first={"share": 0.75}, second={"share": 0.25}), max_seq_len=64)
    summary = prepare_dataset(spec, tokenizer, tmp_path / "out", log=lambda _: None)
    first, second = summary.sources
    assert (first.rows_loaded, first.rows_drawn, first.rows) == (60, 60, 60)
    assert (second.rows_loaded, second.rows_drawn, second.rows) == (40, 20, 20)
    assert (first.share, second.share) == (0.75, 0.25)
    assert summary.rows == 80 and summary.format == "alpaca"
    assert first.tokens + second.tokens == summary.tokens
    assert first.target_tokens + second.target_tokens == summary.target_tokens
    assert second.tokens > 0 and first.tokens > second.tokens
    splits = load_prepared(tmp_path / "out")
    completions = [c for split in splits.values() for c in split["completion"]]
    assert sum(c.startswith("a") for c in completions) == 60 and sum(c.isdigit() for c in completions) == 20


def test_the_draw_is_seeded_and_keeps_each_files_order(two_files):
    a, b = two_files
    spec = DataSpec(mixture=mixture(a, b, second={"max_rows": 10}))
    parts, fmt = load_parts(spec, log=lambda _: None)
    again, _ = load_parts(spec, log=lambda _: None)
    other, _ = load_parts(spec.model_copy(update={"seed": 7}), log=lambda _: None)
    assert fmt == "alpaca" and len(parts[0].rows) == 60 and len(parts[1].rows) == 10
    assert parts[1].row_numbers == again[1].row_numbers == sorted(parts[1].row_numbers)
    assert parts[1].row_numbers != other[1].row_numbers
    assert parts[1].rows == [{"instruction": f"What is {n - 1} plus one?", "output": str(n)} for n in parts[1].row_numbers]


def test_max_rows_caps_a_mixture_in_proportion(two_files, tokenizer, tmp_path):
    a, b = two_files
    spec = DataSpec(mixture=mixture(a, b), max_rows=50, max_seq_len=64)
    summary = prepare_dataset(spec, tokenizer, tmp_path / "out", log=lambda _: None)
    assert [s.rows for s in summary.sources] == [30, 20] and summary.rows == 50


def test_a_chat_mixture_turns_alpaca_rows_into_one_turn_chats(tmp_path, tokenizer):
    a, s = jsonl(tmp_path / "a.jsonl", alpaca(10)), jsonl(tmp_path / "sg.jsonl", sharegpt(10))
    spec = DataSpec(mixture=[{"source": str(a)}, {"source": str(s)}], max_seq_len=64)
    summary = prepare_dataset(spec, tokenizer, tmp_path / "out", log=lambda _: None)
    assert summary.format == "chat" and [x.format for x in summary.sources] == ["alpaca", "sharegpt"]
    parts, _ = load_parts(spec, log=lambda _: None)
    assert parts[0].rows[0] == {"messages": [{"role": "user", "content": "Repeat a0."},
                                             {"role": "assistant", "content": "a0"}]}


def test_formats_that_cannot_render_as_one_are_refused(tmp_path):
    a, t = jsonl(tmp_path / "a.jsonl", alpaca(4)), jsonl(tmp_path / "t.jsonl", [{"text": "once upon a time"}] * 4)
    with pytest.raises(DataError, match=rf"cannot render in one format \({a} is alpaca, {t} is text\)"):
        load_parts(DataSpec(mixture=[{"source": str(a)}, {"source": str(t)}]), log=lambda _: None)


def test_a_bad_row_names_its_own_file_and_row(two_files, tmp_path):
    a, _ = two_files
    bad = jsonl(tmp_path / "bad.jsonl", qa(5) + [{"question": "q"}])
    spec = DataSpec(mixture=mixture(a, bad, second={"max_rows": 2}))
    with pytest.raises(DataError, match=rf"^dataset {bad}, row 6: missing required field 'output' \(format alpaca\)$"):
        load_parts(spec, log=lambda _: None)


def test_the_fingerprint_covers_every_source(two_files):
    a, b = two_files
    spec = DataSpec(mixture=mixture(a, b))
    before = source_identity(spec)
    assert [x["source"] for x in before["mixture"]] == [str(a), str(b)]
    jsonl(b, qa(39))
    assert source_identity(spec)["mixture"][0] == before["mixture"][0]
    assert source_identity(spec)["mixture"][1] != before["mixture"][1]
    hub = DataSpec(mixture=[{"source": str(a)}, {"source": "tatsu-lab/alpaca", "hub_revision": "abc"}])
    assert source_identity(hub)["mixture"][1] == {"source": "tatsu-lab/alpaca", "revision": "abc", "split": "train"}


def test_a_single_source_is_a_one_source_mixture_with_all_rows(two_files, tokenizer, tmp_path):
    a, _ = two_files
    summary = prepare_dataset(DataSpec(source=str(a), max_seq_len=64), tokenizer, tmp_path / "out", log=lambda _: None)
    assert len(summary.sources) == 1 and summary.sources[0].rows == summary.rows == 60
    assert summary.sources[0].share == 1.0 and source_identity(DataSpec(source=str(a))).keys() == {"source", "sha256"}


@pytest.mark.parametrize("config,message", [
    ({"mixture": [{"source": "a.jsonl", "share": 0.5}, {"source": "b.jsonl", "share": 0.4}]},
     "mixture shares must sum to 1, got 0.5 + 0.4 = 0.9"),
    ({"mixture": [{"source": "a.jsonl", "share": 0.5}, {"source": "b.jsonl"}]},
     "give every mixture source a share or none: source 2 (b.jsonl) has none"),
    ({"mixture": [{"source": "a.jsonl", "share": 1.5}]}, "share must be in (0, 1], got 1.5"),
    ({"mixture": [{"source": "a.jsonl", "max_rows": 0}]}, "max_rows must be > 0, got 0"),
    ({"mixture": [{"source": "a.jsonl", "shar": 0.5}]}, "Extra inputs are not permitted"),
    ({"mixture": [{"source": "a.jsonl", "share": 1, "max_rows": 5}]},
     "give a source a share or max_rows, not both (share=1, max_rows=5)"),
    ({"source": "x.jsonl", "mixture": [{"source": "a.jsonl"}]},
     "give either source or mixture, not both: source='x.jsonl' is set beside a mixture of 1; move it into the mixture"),
])
def test_bad_mixture_settings_are_one_line(config, message):
    with pytest.raises(ValidationError) as err:
        DataSpec(**config)
    assert err.value.errors()[0]["msg"].removeprefix("Value error, ") == message


def test_shares_may_be_rounded():
    spec = DataSpec(mixture=[{"source": s, "share": 0.33} for s in ("a", "b", "c")])
    assert len(spec.sources()) == 3
    assert draw_counts([10, 50, 50], spec.sources(), None) == [10, 10, 10]


def test_a_hub_source_in_a_mixture_loads_through_datasets_with_its_own_split_and_revision(two_files):
    a, _ = two_files  # the hub is unreachable here (conftest sets HF_DATASETS_OFFLINE): the real call fails fast
    spec = DataSpec(mixture=[{"source": str(a)},
                             {"source": "nobody/no-such-dataset", "hub_split": "validation", "hub_revision": "v1"}])
    with pytest.raises(DataError, match=r"could not load hub dataset 'nobody/no-such-dataset' \(split 'validation', "
                                        r"revision v1\): the hub could not be reached"):
        load_parts(spec, log=lambda _: None)
