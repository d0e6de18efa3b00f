"""Tokenizing, masking, truncating and splitting, on the embedded tokenizer with small hand-made datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.data.preparation import IGNORE_INDEX, load_prepared, prepare_dataset
from ops.data.sources import DataError
from ops.data.spec import DataSpec
from tests.ops.chat_tokenizers import FAMILIES, chat_tokenizer, red_conversations


def make_rows(n: int) -> list[dict]:
    return [{"instruction": "Repeat the words exactly.", "input": f"apple river {i}", "output": f"apple river {i}"} for i in range(n)]


def prepare(tmp_path: Path, rows: list[dict], tokenizer, **spec) -> tuple[dict, object, list[str]]:
    """Write `rows` as JSONL, prepare them, and return (stats, the saved splits, the log lines)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    lines: list[str] = []
    stats = prepare_dataset(DataSpec(source=str(src), **spec), tokenizer, out, log=lines.append)
    return stats, load_prepared(out), lines


def all_examples(splits) -> list[dict]:
    return list(splits["train"]) + list(splits["eval"])


def prompt_len(tokenizer, prompt: str) -> int:
    return 1 + len(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # bos + prompt


def assert_masked(example: dict, tokenizer) -> None:
    """Prompt (and bos) labels are ignored; every completion label equals its input id; eos ends it once."""
    n = prompt_len(tokenizer, example["prompt"])
    ids, labels = example["input_ids"], example["labels"]
    assert ids[0] == tokenizer.bos_token_id
    assert labels[:n] == [IGNORE_INDEX] * n
    assert labels[n:] == ids[n:] and len(ids) > n
    assert ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id
    assert example["attention_mask"] == [1] * len(ids)


def test_alpaca_with_and_without_input(tmp_path, tokenizer):
    rows = [{"instruction": "Give the first word.", "input": "apple river", "output": "apple"},
            {"instruction": "Say hi.", "output": "hi"}, {"instruction": "Say yo.", "input": "", "output": "yo"}]
    stats, splits, lines = prepare(tmp_path, rows, tokenizer)
    assert stats.format == "alpaca"
    by_completion = {e["completion"]: e for e in all_examples(splits)}
    assert by_completion["apple"]["prompt"] == "### Instruction:\nGive the first word.\n\n### Input:\napple river\n\n### Response:\n"
    assert by_completion["hi"]["prompt"] == "### Instruction:\nSay hi.\n\n### Response:\n"
    assert "### Input" not in by_completion["yo"]["prompt"]
    for example in by_completion.values():
        assert_masked(example, tokenizer)
    assert lines[0] == f"loaded 3 rows from {tmp_path / 'data.jsonl'} (alpaca); 0 exact duplicates dropped"


def test_chat_uses_the_template_and_keeps_a_single_eos(tmp_path, tokenizer):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say {w}."},
                          {"role": "assistant", "content": w}]} for w in ("hi", "yo", "ok")]
    stats, splits, _ = prepare(tmp_path, rows, tokenizer)
    assert stats.format == "chat"
    for example in all_examples(splits):
        assert example["prompt"].startswith("<|system|>\nBe brief.\n<|user|>\nSay ")
        assert example["prompt"].endswith("<|assistant|>\n")
        assert example["completion"].endswith("</s>")
        assert_masked(example, tokenizer)


@pytest.mark.parametrize("turns", ["all", "last"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_chat_targets_end_at_the_end_of_turn_token(tmp_path, family, turns):
    """Llama 3 <|eot_id|>, ChatML <|im_end|>\\n, Gemma <end_of_turn>\\n, <|end|>\\n, </s>\\n: the targets are each
    trained reply and its closing token, nothing after the last and no second stop (</s>\\n once gave
    `red </s> \\n </s>`)."""
    tok = chat_tokenizer(family)
    end = FAMILIES[family][2]
    _, splits, _ = prepare(tmp_path, [{"messages": c} for c in red_conversations(2)], tok, train_on_turns=turns)
    reply = tok("red", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(end)]
    expected = reply * (2 if turns == "all" else 1)
    for example in all_examples(splits):
        assert example["completion"] == "red" + end
        targets = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
        assert targets == expected, tok.convert_ids_to_tokens(targets)
        assert example["input_ids"][-len(reply):] == reply  # nothing after the closing token
        assert example["input_ids"].count(tok.eos_token_id) == (1 if end == tok.eos_token else 0) + (
            example["prompt"].count(tok.eos_token))


def test_prompt_completion_and_explicit_format(tmp_path, tokenizer):
    rows = [{"prompt": f"2+{i}=", "completion": str(2 + i), "extra": "ignored"} for i in range(4)]
    stats, splits, _ = prepare(tmp_path, rows, tokenizer, format="prompt_completion")
    assert stats.format == "prompt_completion"
    for example in all_examples(splits):
        assert_masked(example, tokenizer)
        assert example["completion"] == str(2 + int(example["prompt"][2:-1]))


def test_text_trains_on_everything_but_bos(tmp_path, tokenizer):
    stats, splits, _ = prepare(tmp_path, [{"text": f"apple river stone {i}"} for i in range(4)], tokenizer)
    assert stats.format == "text"
    for example in all_examples(splits):
        assert example["prompt"] == ""
        assert example["labels"][0] == IGNORE_INDEX
        assert example["labels"][1:] == example["input_ids"][1:]


def test_train_on_prompt_labels_every_token(tmp_path, tokenizer):
    _, splits, _ = prepare(tmp_path, make_rows(4), tokenizer, train_on_prompt=True)
    for example in all_examples(splits):
        assert example["labels"] == example["input_ids"]


def test_stats_count_tokens_and_targets(tmp_path, tokenizer):
    stats, splits, _ = prepare(tmp_path, make_rows(10), tokenizer)
    examples = all_examples(splits)
    assert stats.tokens == sum(len(e["input_ids"]) for e in examples)
    assert stats.target_tokens == sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples)
    assert splits["train"].column_names == ["input_ids", "attention_mask", "labels", "prompt", "completion"]
    assert splits["train"].features["labels"].feature.dtype == "int64"


def test_truncation_counts_and_drops_rows_left_without_a_target(tmp_path, tokenizer):
    long_output = " ".join(["apple river stone"] * 20)
    rows = [{"prompt": "Say:", "completion": long_output},  # truncated, keeps part of its completion
            {"prompt": " ".join(["tiger"] * 40), "completion": "x"},  # prompt alone fills max_seq_len
            {"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    stats, splits, lines = prepare(tmp_path, rows, tokenizer, max_seq_len=16)
    assert stats.truncated_rows == 2 and stats.dropped_no_target == 1
    assert stats.rows == 3 and stats.rows_loaded == 4
    examples = all_examples(splits)
    assert max(len(e["input_ids"]) for e in examples) == 16
    cut = next(e for e in examples if e["completion"] == long_output)
    assert cut["input_ids"][-1] != tokenizer.eos_token_id  # cut short, so no end-of-sequence to learn
    assert "2 truncated to 16, 1 dropped with no target left" in lines[1]


def test_duplicates_are_dropped_and_counted_before_max_rows(tmp_path, tokenizer):
    rows = make_rows(6)
    reordered = {k: rows[0][k] for k in reversed(list(rows[0]))}  # same row, other key order
    stats, _, _ = prepare(tmp_path / "a", rows + [rows[1], reordered], tokenizer)
    assert stats.rows_loaded == 8 and stats.duplicates_dropped == 2 and stats.rows == 6
    stats, _, _ = prepare(tmp_path / "b", rows + [rows[1]], tokenizer, max_rows=4)
    assert stats.duplicates_dropped == 1 and stats.rows == 4


def test_split_is_seeded_disjoint_and_complete(tmp_path, tokenizer):
    rows = make_rows(40)
    stats, a, _ = prepare(tmp_path / "a", rows, tokenizer, eval_fraction=0.25, seed=7)
    _, b, _ = prepare(tmp_path / "b", rows, tokenizer, eval_fraction=0.25, seed=7)
    _, c, _ = prepare(tmp_path / "c", rows, tokenizer, eval_fraction=0.25, seed=8)
    assert (stats.train_rows, stats.eval_rows) == (30, 10)
    assert a["eval"]["completion"] == b["eval"]["completion"]
    assert a["eval"]["completion"] != c["eval"]["completion"]
    train, held_out = set(a["train"]["completion"]), set(a["eval"]["completion"])
    assert not train & held_out
    assert train | held_out == {r["output"] for r in rows}


def test_tiny_datasets_still_get_one_row_per_split(tmp_path, tokenizer):
    stats, _, _ = prepare(tmp_path, make_rows(2), tokenizer, eval_fraction=0.9)
    assert (stats.train_rows, stats.eval_rows) == (1, 1)


def test_too_few_rows_for_a_split(tmp_path, tokenizer):
    with pytest.raises(DataError, match="too few rows for a train/eval split: 1"):
        prepare(tmp_path, make_rows(1) * 3, tokenizer)  # three copies of one row dedupe to one


def test_preview_is_short(tmp_path, tokenizer):
    rows = [{"prompt": "p" * 300, "completion": f"c{i}"} for i in range(8)]
    stats, _, _ = prepare(tmp_path, rows, tokenizer, max_seq_len=512)
    assert len(stats.preview) == 5
    assert len(stats.preview[0]["prompt"]) == 120 and stats.preview[0]["prompt"].endswith("...")
    assert stats.preview[0]["completion"] == "c0"


def test_wrong_explicit_format_names_the_row(tmp_path, tokenizer):
    with pytest.raises(DataError, match=r"data\.jsonl, row 1: missing required field 'messages' \(format chat\)"):
        prepare(tmp_path, make_rows(3), tokenizer, format="chat")


def test_chat_needs_a_chat_template(tmp_path, tokenizer):
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>")
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 2
    with pytest.raises(DataError, match="needs a tokenizer with a chat template"):
        prepare(tmp_path, rows, plain)


def test_bundled_dataset_end_to_end(tmp_path, tokenizer):
    lines: list[str] = []
    stats = prepare_dataset(DataSpec(), tokenizer, tmp_path, log=lines.append)
    assert stats.rows_loaded == 1500 and stats.format == "alpaca"
    assert stats.rows == 1500 - stats.duplicates_dropped
    assert stats.truncated_rows == 0 and stats.dropped_no_target == 0
    assert stats.eval_rows == round(stats.rows * 0.1)
    splits = load_prepared(tmp_path / "dataset")  # the dataset folder itself loads too
    assert len(splits["train"]) == stats.train_rows
    assert_masked(splits["eval"][0], tokenizer)


def test_load_prepared_without_a_dataset(tmp_path):
    with pytest.raises(DataError, match="no prepared dataset at"):
        load_prepared(tmp_path)


def test_rows_cut_before_their_response_are_explained(tmp_path, tokenizer):
    rows = [{"instruction": f"Say the word number {i}.", "output": "yes"} for i in range(6)]
    with pytest.raises(DataError) as err:
        prepare(tmp_path, rows, tokenizer, max_seq_len=8)
    longest = max(prompt_len(tokenizer, f"### Instruction:\nSay the word number {i}.\n\n### Response:\n") for i in range(6))
    assert str(err.value) == (
        f"too few rows for a train/eval split: 0 left of 6: 6 rows were cut at max_seq_len=8 before their response "
        f"began (longest prompt: {longest} tokens); raise max_seq_len to at least {longest + 1}")


def test_copies_of_one_row_are_explained(tmp_path, tokenizer):
    with pytest.raises(DataError) as err:
        prepare(tmp_path, make_rows(1) * 50, tokenizer)
    assert str(err.value) == ("too few rows for a train/eval split: 1 left of 50: 49 of 50 rows are exact duplicates "
                              "of an earlier row (same prompt and response)")


def test_duplicates_are_found_on_what_the_model_sees_not_on_unused_columns(tmp_path, tokenizer):
    import pandas as pd

    unique = [{"prompt": f"Count to {i}.", "completion": " ".join(str(k) for k in range(i))} for i in range(1, 41)]
    frame = pd.DataFrame(unique * 3)  # every example three times, as an export that was appended to twice
    src = tmp_path / "data.csv"
    frame.to_csv(src)  # pandas' default: a leading unnamed index column 0, 1, 2, ...
    lines: list[str] = []
    stats = prepare_dataset(DataSpec(source=str(src)), tokenizer, tmp_path / "out", log=lines.append)
    assert stats.duplicates_dropped == 80 and stats.rows == 40
    assert stats.ignored_columns == [""]
    assert "ignoring columns that format prompt_completion does not use: '' (unnamed: a saved index?)" in lines
    splits = load_prepared(tmp_path / "out")
    assert not set(splits["train"]["prompt"]) & set(splits["eval"]["prompt"])


def test_near_duplicate_prompts_across_the_split_are_counted(tmp_path, tokenizer):
    rows = [{"prompt": f"Name colour {i}.", "completion": f"c{i}"} for i in range(20)]
    rows += [{"prompt": f"  name   COLOUR {i}.", "completion": f"other {i}"} for i in range(20)]
    stats, splits, _ = prepare(tmp_path, rows, tokenizer, eval_fraction=0.25)
    from ops.data.preparation import normalized

    train = {normalized(p) for p in splits["train"]["prompt"]}
    expected = sum(normalized(p) in train for p in splits["eval"]["prompt"])
    assert stats.near_duplicate_prompts_across_split == expected > 0


def test_unknown_chat_roles_are_refused_naming_row_and_message(tmp_path, tokenizer):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": "wizard", "content": "cast"}, {"role": "assistant", "content": "a"}]}
    with pytest.raises(DataError) as err:
        prepare(tmp_path, [good, bad, good], tokenizer)
    assert str(err.value) == (f"dataset {tmp_path / 'data.jsonl'}, row 2: message 1 has role 'wizard'; "
                              "the roles are system, user, assistant, tool (format chat)")


def test_tool_messages_need_a_template_with_a_tool_role(tmp_path, tokenizer):
    tool = {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "42"},
                         {"role": "assistant", "content": "a"}]}
    with pytest.raises(DataError, match=r"^row 1: has a 'tool' message, and the tokenizer's chat template has no tool role$"):
        prepare(tmp_path, [tool, tool], tokenizer)
