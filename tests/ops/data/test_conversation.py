"""Multi-turn chat: every assistant turn is a target (or the last only), under templates of the Llama 3, ChatML and
Gemma shapes, with the exact target positions, the end-of-turn tokens, and the tokens inference would see."""

from __future__ import annotations

import json

import pytest

from ops.data.conversation import HistoryRewritten, Segment, chat_segments
from ops.data.preparation import IGNORE_INDEX, render_rows, tokenize_pairs
from ops.data.prompt_formats import render_example, render_request
from ops.data.sources import DataError
from ops.data.spec import DataSpec
from ops.data.tokens import with_bos
from tests.ops.chat_tokenizers import FAMILIES, chat_tokenizer
from tests.ops.data.conversations import (CHATML_DROPPING_REASONING, CONVERSATION, SHAPES, expected_pieces,
                                          with_reasoning)
from tests.ops.data.test_preparation import all_examples, prepare


def example_of(messages, tok, **spec) -> dict:
    """The one training example a conversation becomes."""
    spec = DataSpec(**{"max_seq_len": 512, **spec})
    (example,), counts = tokenize_pairs(render_rows([{"messages": messages}], [1], "chat", tok, spec.train_on_turns),
                                        tok, spec)
    return example


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def targets(example: dict) -> list[int]:
    return [i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX]


@pytest.mark.parametrize("turns", ["all", "last"])
@pytest.mark.parametrize("family", sorted(SHAPES))
def test_three_turns_target_exactly_the_trained_replies_and_their_end_tokens(family, turns):
    tok = chat_tokenizer(family)
    example = example_of(CONVERSATION, tok, train_on_turns=turns)
    expected_ids, expected_targets = [], set()
    for text, target in expected_pieces(family, CONVERSATION, turns):
        piece = ids(tok, text)
        expected_targets |= set(range(len(expected_ids), len(expected_ids) + len(piece))) if target else set()
        expected_ids += piece
    assert example["input_ids"] == with_bos(tok, expected_ids)
    assert set(targets(example)) == expected_targets
    assert all(example["labels"][i] == example["input_ids"][i] for i in expected_targets)

    end = tok.convert_tokens_to_ids(SHAPES[family][2])
    runs = [i for i in sorted(expected_targets) if i + 1 not in expected_targets]  # the last position of each reply
    assert len(runs) == (3 if turns == "all" else 1)
    assert [example["input_ids"][i] for i in runs] == [end] * len(runs)  # each reply's end-of-turn token is a target
    after = [i + 1 for i in runs[:-1]]  # what follows an end-of-turn token is context: ChatML's and Gemma's "\n"
    assert all(example["labels"][i] == IGNORE_INDEX for i in after)
    if SHAPES[family][3]:
        assert all(tok.decode([example["input_ids"][i]]).startswith("\n") for i in after)
    assert example["input_ids"][-1] == end and example["input_ids"].count(tok.eos_token_id) == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_turn_starts_where_the_prompt_inference_renders_ends(family):
    """The tokens before each trained reply are the tokens serving feeds for that conversation so far (its
    messages up to the reply, rendered with the generation prompt), and the example is the whole conversation
    tokenized in one go."""
    from ops.model.generation import encode_prompts

    tok = chat_tokenizer(family)
    example = example_of(CONVERSATION, tok)
    starts = [i for i in targets(example) if i - 1 not in targets(example)]
    replies = [k for k, m in enumerate(CONVERSATION) if m["role"] == "assistant"]
    assert len(starts) == len(replies) == 3
    for start, k in zip(starts, replies):
        prompt = render_request({"messages": CONVERSATION[:k]}, "chat", tok)
        assert encode_prompts(tok, [prompt]) == [example["input_ids"][:start]], k
    assert (example["prompt"], example["completion"]) == render_example({"messages": CONVERSATION}, "chat", tok)
    whole = "".join(text for text, _ in chat_segments(CONVERSATION, tok))
    assert with_bos(tok, ids(tok, whole)) == example["input_ids"]  # every family's reply ends with a stop: no eos added


def test_the_embedded_template_closes_every_reply_with_one_eos(tokenizer):
    example = example_of(CONVERSATION, tokenizer)
    eos = tokenizer.eos_token_id
    runs = [i for i in targets(example) if i + 1 not in targets(example)]
    assert [example["input_ids"][i] for i in runs] == [eos] * 3 and example["input_ids"].count(eos) == 3
    assert example["input_ids"][-1] == eos


def test_train_on_prompt_still_labels_every_token(tokenizer):
    example = example_of(CONVERSATION, tokenizer, train_on_prompt=True)
    assert example["labels"] == example["input_ids"]


def test_segments_alternate_and_join_into_the_rendered_conversation():
    tok = chat_tokenizer("chatml")
    segments = chat_segments(CONVERSATION, tok)
    assert [s.target for s in segments] == [False, True] * 3
    assert [s.text for s in segments if s.target] == ["red<|im_end|>", "blue<|im_end|>", "red and blue<|im_end|>"]
    full = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert "".join(s.text for s in segments) + "\n" == full
    assert chat_segments(CONVERSATION, tok, "last") == [Segment(full[: -len("red and blue<|im_end|>\n")], False),
                                                          Segment("red and blue<|im_end|>", True)]


def test_a_template_that_drops_earlier_reasoning_is_refused_naming_the_row(tmp_path):
    tok = chat_tokenizer("chatml")
    tok.chat_template = CHATML_DROPPING_REASONING
    assert chat_segments(CONVERSATION, tok)[1].text == "red<|im_end|>"  # nothing to drop: renders turn by turn
    with pytest.raises(HistoryRewritten):
        chat_segments(with_reasoning(CONVERSATION), tok)
    rows = [{"messages": CONVERSATION}, {"messages": with_reasoning(CONVERSATION)}]
    with pytest.raises(DataError) as err:
        prepare(tmp_path / "all", rows, tok)
    assert str(err.value) == (
        "row 2: the chat template rewrites earlier turns: the prompt for the reply in message 5 does not start with "
        "the conversation as rendered through the reply before it (first difference at character 113: "
        "'<think>apples are red</think>\\nred<|im_en' became 'red<|im_end|>\\n<|im_start|>user\\nAnd the r'); set "
        "train_on_turns: last to train on the last reply only")
    # The documented fallback: the last reply alone, in the history as the template renders it at inference; so the
    # row with reasoning is what the model sees of the row without, a duplicate.
    other = with_reasoning([*CONVERSATION[:-1], {"role": "assistant", "content": "both red"}])
    stats, splits, _ = prepare(tmp_path / "last", rows + [{"messages": other}], tok, train_on_turns="last")
    assert (stats.rows, stats.duplicates_dropped) == (2, 1)
    for example in all_examples(splits):
        assert "<think>" not in example["prompt"] and example["prompt"].endswith("<|im_start|>assistant\n")
        assert [example["input_ids"][i] for i in targets(example)] == ids(tok, example["completion"])
    assert {e["completion"] for e in all_examples(splits)} == {"red and blue<|im_end|>", "both red<|im_end|>"}


def test_turns_cut_by_max_seq_len_keep_the_turns_before_the_cut(tmp_path):
    """A conversation cut in its second reply still trains on its first, so it is truncated, not dropped; one cut
    before its first reply has nothing left and is dropped, and the error names the tokens before that reply."""
    tok = chat_tokenizer("chatml")
    first = example_of(CONVERSATION, tok)
    second_start = [i for i in targets(first) if i - 1 not in targets(first)][1]
    first_start = targets(first)[0]
    rows = [{"messages": CONVERSATION}, {"messages": [{**m, "content": m["content"] + " again"} for m in CONVERSATION]}]
    stats, splits, lines = prepare(tmp_path / "cut", rows, tok, max_seq_len=second_start + 1)
    assert (stats.truncated_rows, stats.dropped_no_target, stats.rows) == (2, 0, 2)
    assert "2 truncated to" in lines[1]
    with pytest.raises(DataError) as err:
        prepare(tmp_path / "none", rows, tok, max_seq_len=first_start)
    assert f"2 rows were cut at max_seq_len={first_start} before their response began (longest prompt: " in str(err.value)
    longest = max(len(with_bos(tok, ids(tok, chat_segments(r["messages"], tok)[0].text))) for r in rows)
    assert str(err.value).endswith(f"(longest prompt: {longest} tokens); raise max_seq_len to at least {longest + 1}")


def test_conversations_that_differ_only_in_an_earlier_turn_are_not_duplicates(tmp_path):
    tok = chat_tokenizer("llama3")
    other = [*CONVERSATION[:2], {"role": "assistant", "content": "green"}, *CONVERSATION[3:]]
    stats, splits, _ = prepare(tmp_path, [{"messages": CONVERSATION}, {"messages": other}, {"messages": other}], tok)
    assert (stats.duplicates_dropped, stats.rows) == (1, 2)
    assert stats.target_tokens == sum(len(targets(e)) for e in all_examples(splits))


def test_the_generated_conversations_prepare_with_every_turn_a_target(tmp_path, tokenizer):
    from ops.data.synthetic_chat import generate_conversations

    rows = generate_conversations(40, seed=3)
    assert all(2 <= sum(m["role"] == "assistant" for m in r["messages"]) <= 4 for r in rows)
    stats, splits, _ = prepare(tmp_path, rows, tokenizer, max_seq_len=256)
    assert stats.rows == 40 and stats.truncated_rows == 0
    by_prompt = {json.dumps(r["messages"][:-1]): r for r in rows}
    assert len(by_prompt) == 40
    eos = tokenizer.eos_token_id
    for example in all_examples(splits):  # one eos closes each reply (the embedded template ends turns with eos)
        trained = [example["input_ids"][i] for i in targets(example)]
        assert trained.count(eos) == example["input_ids"].count(eos) == example["prompt"].count("</s>") + 1


def test_generation_markers_in_a_template_change_nothing():
    """Templates with `{% generation %}` markers render the same text; turns are found by rendering, not by them."""
    tok = chat_tokenizer("chatml")
    plain = example_of(CONVERSATION, tok)
    tok.chat_template = tok.chat_template.replace(
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}",
        "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}{{ m['content'] + "
        "'<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}")
    assert "{% generation %}" in tok.chat_template
    assert example_of(CONVERSATION, tok) == plain


def test_tool_turns_are_context():
    """A tool result between two assistant turns (Qwen2.5's shape: a user turn wrapping <tool_response>) is masked."""
    tok = chat_tokenizer("chatml")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}"
        "{{ '<|im_start|>user\\n<tool_response>\\n' + m['content'] + '\\n</tool_response><|im_end|>\\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    messages = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "call weather"},
                {"role": "tool", "content": "sunny 21C"}, {"role": "assistant", "content": "sunny"}]
    example = example_of(messages, tok)
    trained = tok.decode([example["input_ids"][i] for i in targets(example)])
    assert trained == "call weather<|im_end|>sunny<|im_end|>"


@pytest.mark.parametrize("rows,fmt", [([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)], "alpaca"),
                                      ([{"text": f"some text {i}"} for i in range(4)], "text")])
def test_train_on_turns_last_on_data_without_turns_is_refused(tmp_path, rows, fmt):
    """One reply per row: `last` would change the fingerprint and nothing else, so it is named rather than ignored."""
    with pytest.raises(DataError, match=rf"^train_on_turns: last applies to chat data only, and this data is {fmt}: "):
        prepare(tmp_path, rows, chat_tokenizer("chatml"), train_on_turns="last")
