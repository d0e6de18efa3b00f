"""Sample generations a person can read: prompts without template boilerplate, match marks, whole inputs."""

from __future__ import annotations

import json

import pytest

from ops.core.paths import BUNDLED_DATASET
from ops.data.prompt_formats import alpaca_prompt, chat_prompt
from ops.evaluation.samples import MATCH, MISS, clip_words, readable_prompt, samples_markdown
from ops.model.embedded import build_tokenizer, corpus
from tests.ops.chat_tokenizers import FAMILIES, chat_tokenizer
from tests.ops.evaluation.test_evaluator import SPEC, adapter_dir, dataset_dir, model_dir, report  # noqa: F401
from tests.ops.evaluation.test_evaluator import logged  # noqa: F401

CONVERSATION = [{"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "blue"},
                {"role": "user", "content": "Name the colors in the list.\nred stone ### blue"}]


def test_alpaca_prompts_give_instruction_and_input():
    assert readable_prompt(alpaca_prompt("Count the words.", "red blue\ngreen")) == ("Count the words.", "red blue\ngreen")
    assert readable_prompt(alpaca_prompt("Say hi.")) == ("Say hi.", "")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_chat_prompts_give_the_last_user_message_without_markers(family):
    tok = chat_tokenizer(family)
    prompt = chat_prompt(CONVERSATION, tok)
    assert readable_prompt(prompt, tok) == (CONVERSATION[-1]["content"], "")


def test_the_embedded_template_and_plain_prompts():
    tok = build_tokenizer(corpus(BUNDLED_DATASET), 1024)
    system = [{"role": "system", "content": "Answer in one word."}]
    assert readable_prompt(chat_prompt(system + CONVERSATION, tok), tok) == (CONVERSATION[-1]["content"], "")
    assert readable_prompt("Translate: cat</s>", tok) == ("Translate: cat", "")  # prompt_completion: whole, no eos text
    assert readable_prompt("", tok) == ("", "")  # the text format has no prompt


def test_long_cells_are_cut_at_a_word_and_say_how_much_is_left():
    words = " ".join(["quartz"] * 100)  # 699 characters
    clipped = clip_words(words, 100)
    assert clipped.startswith("quartz quartz") and clipped.endswith("chars)")
    assert clipped.split(" …")[0].split(" ")[-1] == "quartz"  # no word cut in half
    assert int(clipped.rsplit("+", 1)[1].split()[0]) == len(words) - len(clipped.split(" …")[0])
    assert clip_words("short", 100) == "short"


def test_report_samples_are_readable_and_marked(report):  # noqa: F811
    rows = [json.loads(line) for line in BUNDLED_DATASET.read_text().splitlines()[: len(report.samples)]]
    for sample, row in zip(report.samples, rows):
        assert (sample["instruction"], sample["input"]) == (row["instruction"], row["input"])
        assert sample["match"] == (MATCH if sample["tuned"].strip() == sample["reference"].strip() else MISS)
    table = samples_markdown(report.samples)
    assert table.splitlines()[0] == "| # | instruction | input | reference | tuned | match | base |"
    assert "###" not in table and len(table.splitlines()) == 2 + len(report.samples)


def test_marks_are_the_exact_match_metric_per_row(model_dir, dataset_dir):  # noqa: F811
    """Half the answers right (one only up to whitespace, which the metric forgives): the ✓ share is the score."""
    from ops.evaluation.evaluator import load_eval_split, load_metric, sample_rows
    from ops.model.loading import load_tokenizer

    rows = load_eval_split(dataset_dir).select(range(4))
    references = ["zero", "one", "two", "three"]
    tuned = ["zero", " one\n", "three", "Three"]
    metric = load_metric("exact_match")
    samples = sample_rows(rows, references, ["x"] * 4, tuned, load_tokenizer(model_dir), metric, limit=10)
    assert [s["match"] for s in samples] == [MATCH, MATCH, MISS, MISS]
    score = metric.compute(predictions=tuned, references=references)["exact_match"]
    assert sum(s["match"] == MATCH for s in samples) / len(samples) == score == 0.5
    assert len(sample_rows(rows, references, ["x"] * 4, tuned, load_tokenizer(model_dir), metric, limit=3)) == 3


def test_older_reports_keep_their_columns():
    old = [{"prompt": "### Instruction:\nSay hi.\n\n### Response:\n", "reference": "hi", "base": "x", "tuned": "hi"}]
    assert samples_markdown(old).splitlines()[0] == "| prompt | reference | base | tuned |"
    assert samples_markdown([]) == "_empty_"
