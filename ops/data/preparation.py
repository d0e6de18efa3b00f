"""Turn raw examples into a tokenized train/eval dataset with the prompt masked out of the loss.

Steps: load, pick and check the format, render each row into target and non-target segments (a chat row's
assistant turns, or the completion), drop exact duplicates of what the model sees, tokenize segment by segment,
mask, truncate, split by seed, save. The returned stats become the asset's metadata.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import datasets

from .chat_template import stop_token_ids
from .conversation import HistoryRewritten, Segment, TrainOnTurns
from .mixture import Part, load_parts
from .prompt_formats import Rendered, common_system_message, render_training
from .sources import DataError, unused_columns
from .spec import DatasetSummary, DataSpec, SourceSummary
from .tokens import IGNORE_INDEX, with_bos

PREVIEW_ROWS = 5
PREVIEW_CHARS = 120
# Pinned rather than inferred, so the saved schema does not change with the `datasets` version.
FEATURES = datasets.Features({
    "input_ids": datasets.Sequence(datasets.Value("int32")),
    "attention_mask": datasets.Sequence(datasets.Value("int8")),
    "labels": datasets.Sequence(datasets.Value("int64")),  # int64: what torch's cross-entropy wants for targets
    "prompt": datasets.Value("string"),
    "completion": datasets.Value("string"),
})


def dedupe(pairs: list[Rendered]) -> list[int]:
    """Indices of the first occurrence of each distinct rendered row (its segments, prompt and completion).

    Rows are compared on what the model sees, so columns the format does not read (a CSV's saved index, ids)
    cannot make two copies of one example look different and leak it into both splits.
    """
    seen: set[tuple] = set()
    kept = []
    for i, pair in enumerate(pairs):
        if pair not in seen:
            seen.add(pair)
            kept.append(i)
    return kept


def normalized(text: str) -> str:
    """Case and whitespace folded: what makes two prompts the same question to a reader."""
    return " ".join(text.casefold().split())


def near_duplicates_across(train_prompts: list[str], eval_prompts: list[str]) -> int:
    """How many held-out examples have a prompt that, up to case and whitespace, is also a training prompt."""
    seen = {normalized(p) for p in train_prompts}
    return sum(normalized(p) in seen for p in eval_prompts)


def render_rows(rows: list[dict], row_numbers: list[int], fmt: str, tokenizer: Any,
                turns: TrainOnTurns = "all") -> list[Rendered]:
    """Each row rendered for training (ops.data.prompt_formats.render_training); a row the tokenizer cannot render
    is named by its row number. `turns`: which assistant turns of a chat row are targets ("all" or "last")."""
    template = getattr(tokenizer, "chat_template", None)
    if fmt == "chat" and not template:
        raise DataError("format 'chat' needs a tokenizer with a chat template, and this tokenizer has none")
    pairs = []
    for n, row in zip(row_numbers, rows):
        if fmt == "chat" and "tool" not in template and any(m["role"] == "tool" for m in row["messages"]):
            raise DataError(f"row {n}: has a 'tool' message, and the tokenizer's chat template has no tool role")
        try:
            pairs.append(render_training(row, fmt, tokenizer, turns))
        except HistoryRewritten as e:
            raise DataError(f"row {n}: {e}") from None
        except Exception as e:  # jinja and the template itself raise assorted types
            raise DataError(f"row {n}: could not render it as {fmt}: {e}") from None
    return pairs


def build_example(parts: list[tuple[list[int], bool]], tokenizer: Any, spec: DataSpec,
                  stop_ids: list[int] | None = None) -> tuple[dict, bool]:
    """One training example (input ids, mask, labels) from token ids flagged target or not, and whether it was cut.

    Non-target tokens get IGNORE_INDEX labels unless `spec.train_on_prompt`; bos is added in front (a non-target)
    when the text did not render it. When the last part is a target, its targets end with one stop: eos is appended
    unless it already ends with a stop token (`stop_ids`, default ops.data.chat_template.stop_token_ids: eos or the
    template's end-of-turn token), since a reply that closes with `<|eot_id|>`, `<|im_end|>` or `</s>` followed by
    eos would teach a double stop. Earlier chat turns end with the end-of-turn token the template writes.
    """
    eos = tokenizer.eos_token_id
    stops = stop_token_ids(tokenizer) if stop_ids is None else stop_ids
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, target in parts:
        input_ids += ids
        labels += ids if target or spec.train_on_prompt else [IGNORE_INDEX] * len(ids)
    if parts and parts[-1][1] and eos is not None and not (parts[-1][0] and parts[-1][0][-1] in stops):
        input_ids, labels = input_ids + [eos], labels + [eos]
    if len(with_bos(tokenizer, input_ids)) > len(input_ids):  # bos is context, a target only with train_on_prompt
        bos = tokenizer.bos_token_id
        input_ids, labels = [bos] + input_ids, [bos if spec.train_on_prompt else IGNORE_INDEX] + labels
    truncated = len(input_ids) > spec.max_seq_len
    input_ids, labels = input_ids[: spec.max_seq_len], labels[: spec.max_seq_len]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}, truncated


def has_target(labels: list[int]) -> bool:
    # position 0's label never counts: the causal LM loss predicts token t from tokens before it
    return any(label != IGNORE_INDEX for label in labels[1:])


def segment_ids(pairs: list[Rendered | tuple[str, str]], tokenizer: Any) -> list[list[tuple[list[int], bool]]]:
    """Each row's segments as (token ids, target) parts, every segment tokenized apart, so its boundaries are token
    boundaries (as a prompt tokenized alone at inference ends where its reply starts). Plain (prompt, completion)
    tuples count as a non-target prompt and a target completion."""
    rendered = [Rendered(*pair) for pair in pairs]
    segments = [r.segments or (Segment(r.prompt, False), Segment(r.completion, True)) for r in rendered]
    flat = [s.text for row in segments for s in row]
    ids = iter(tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else [])
    return [[(next(ids), s.target) for s in row] for row in segments]


def tokens_before_target(parts: list[tuple[list[int], bool]], tokenizer: Any) -> int:
    """How many tokens (bos included) come before a row's first target: below that max_seq_len leaves none."""
    context: list[int] = []
    for ids, target in parts:
        if target and ids:
            break
        context += ids
    return len(with_bos(tokenizer, context))


def tokenize_pairs(pairs: list[Rendered | tuple[str, str]], tokenizer: Any,
                   spec: DataSpec) -> tuple[list[dict], dict[str, int]]:
    """Tokenized examples (with their prompt and completion text) plus counts of truncated rows and of rows left
    with nothing to learn."""
    stop_ids = stop_token_ids(tokenizer)  # read off the chat template once, not per row
    examples, truncated, dropped = [], 0, 0
    for pair, parts in zip(pairs, segment_ids(pairs, tokenizer)):
        example, was_truncated = build_example(parts, tokenizer, spec, stop_ids)
        truncated += was_truncated
        if not has_target(example["labels"]):
            dropped += 1
            continue
        examples.append({**example, "prompt": pair[0], "completion": pair[1]})
    return examples, {"truncated_rows": truncated, "dropped_no_target": dropped}


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, eval) row indices, each non-empty, in their original order."""
    if n < 2:
        raise DataError(f"too few rows for a train/eval split: {n}")
    n_eval = min(max(1, round(n * eval_fraction)), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def too_few_rows(loaded: int, duplicates: int, counts: dict[str, int], left: int, longest_prompt: int,
                 spec: DataSpec) -> DataError:
    """The error for a dataset left with fewer than two examples, naming why the rows went."""
    reasons = []
    if duplicates:
        reasons.append(f"{duplicates} of {loaded} rows are exact duplicates of an earlier row (same prompt and response)")
    if counts["dropped_no_target"]:
        reasons.append(f"{counts['dropped_no_target']} rows were cut at max_seq_len={spec.max_seq_len} before their "
                       f"response began (longest prompt: {longest_prompt} tokens); raise max_seq_len to at least "
                       f"{longest_prompt + 1}")
    if spec.max_rows is not None and spec.max_rows < 2:
        reasons.append(f"max_rows is {spec.max_rows}")
    why = "; ".join(reasons) or "the dataset has fewer than two rows"
    return DataError(f"too few rows for a train/eval split: {left} left of {loaded}: {why}")


def _to_dataset(examples: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({c: [e[c] for e in examples] for c in FEATURES}, features=FEATURES)


def _clip(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def prepare_dataset(spec: DataSpec, tokenizer: Any, out_dir: Path, log: Callable[[str], None] = print) -> DatasetSummary:
    """Load, check, tokenize and split `spec`'s data into `out_dir / "dataset"`.

    Args:
        spec: where the rows come from and how they are tokenized and split.
        tokenizer: the base model's tokenizer.
        out_dir: the step's folder; the splits go to `out_dir / "dataset"`.
        log: one line per stage.
    Returns:
        the counts (rows, tokens), the detected format and a preview.
    Raises:
        DataError: a missing or unreadable source, a bad row (named with its line), or fewer than 2 usable rows.
    """
    parts, fmt = load_parts(spec, log)
    if spec.train_on_turns != "all" and fmt != "chat":  # sharegpt rows arrive as chat; other formats have one reply
        raise DataError(f"train_on_turns: {spec.train_on_turns} applies to chat data only, and this data is {fmt}: "
                        "remove it (every row has a single response, which is always the target)")
    rows = [row for p in parts for row in p.rows]
    ignored = unused_columns(rows, fmt)
    if ignored:
        names = ", ".join(repr(c) if c else "'' (unnamed: a saved index?)" for c in ignored)
        log(f"ignoring columns that format {fmt} does not use: {names}")
    all_pairs = [pair for p in parts
                 for pair in _render_part(p, fmt, tokenizer, spec.train_on_turns, named=bool(spec.mixture))]
    unique = dedupe(all_pairs)
    duplicates = len(rows) - len(unique)
    kept = unique[: spec.max_rows]  # max_rows=None keeps all
    origin = [k for k, p in enumerate(parts) for _ in p.rows]  # row -> its part
    what = spec.source if not spec.mixture else f"a mixture of {len(parts)} sources"
    log(f"loaded {len(rows)} rows from {what} ({fmt}); {duplicates} exact duplicates dropped")
    pairs = [all_pairs[i] for i in kept]
    examples, counts, sources = _tokenize_by_part(parts, [[all_pairs[i] for i in kept if origin[i] == k]
                                                          for k in range(len(parts))], tokenizer, spec)
    tokens = sum(s.tokens for s in sources)
    targets = sum(s.target_tokens for s in sources)
    log(f"tokenized {len(examples)} rows: {tokens} tokens, {targets} target tokens; "
        f"{counts['truncated_rows']} truncated to {spec.max_seq_len}, {counts['dropped_no_target']} dropped with no target left")
    if len(examples) < 2:
        longest = max(tokens_before_target(ids, tokenizer) for ids in segment_ids(pairs, tokenizer))
        raise too_few_rows(len(rows), duplicates, counts, len(examples), longest, spec)
    train_idx, eval_idx = split_indices(len(examples), spec.eval_fraction, spec.seed)
    splits = datasets.DatasetDict({
        "train": _to_dataset([examples[i] for i in train_idx]),
        "eval": _to_dataset([examples[i] for i in eval_idx]),
    })
    splits.save_to_disk(str(Path(out_dir) / "dataset"))
    near = near_duplicates_across([examples[i]["prompt"] for i in train_idx], [examples[i]["prompt"] for i in eval_idx])
    log(f"split {len(train_idx)} train / {len(eval_idx)} eval rows (seed {spec.seed}) into {Path(out_dir) / 'dataset'}; "
        f"{near} held-out prompts also in train up to case and whitespace")
    return DatasetSummary(
        format=fmt,
        rows_loaded=len(rows),
        duplicates_dropped=duplicates,
        ignored_columns=ignored,
        near_duplicate_prompts_across_split=near,
        rows=len(examples),
        train_rows=len(train_idx),
        eval_rows=len(eval_idx),
        tokens=tokens,
        target_tokens=targets,
        **counts,
        max_seq_len=spec.max_seq_len,
        system_message=common_system_message([rows[i] for i in kept], fmt),  # serving's default (chat data)
        preview=[{"prompt": _clip(e["prompt"]), "completion": _clip(e["completion"])} for e in examples[:PREVIEW_ROWS]],
        sources=sources,
    )


def _render_part(part: Part, fmt: str, tokenizer: Any, turns: TrainOnTurns, named: bool) -> list[Rendered]:
    """A source's rows rendered for training; in a mixture, a row error also names the source's file."""
    try:
        return render_rows(part.rows, part.row_numbers, fmt, tokenizer, turns)
    except DataError as e:
        if named:
            raise DataError(f"{part.where}, {e}") from None
        raise


def _tokenize_by_part(parts: list[Part], pairs_by_part: list[list[Rendered]], tokenizer: Any,
                      spec: DataSpec) -> tuple[list[dict], dict[str, int], list[SourceSummary]]:
    """Tokenized examples of every part in order, the summed truncation counts, and each source's rows and tokens."""
    examples, counts, sources = [], {"truncated_rows": 0, "dropped_no_target": 0}, []
    for part, pairs in zip(parts, pairs_by_part):
        got, c = tokenize_pairs(pairs, tokenizer, spec) if pairs else ([], {k: 0 for k in counts})
        examples += got
        counts = {k: counts[k] + c[k] for k in counts}
        sources.append(SourceSummary(
            source=part.spec.source, format=part.own_format, rows_loaded=part.rows_loaded, rows_drawn=len(part.rows),
            rows=len(got), share=0.0, tokens=sum(len(e["input_ids"]) for e in got),
            target_tokens=sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in got)))
    for s in sources:
        s.share = s.rows / len(examples) if examples else 0.0
    return examples, counts, sources


def load_prepared(dataset_dir: Path) -> datasets.DatasetDict:
    """The saved train/eval splits, from the step's output folder (or its `dataset` subfolder itself)."""
    path = Path(dataset_dir)
    path = path / "dataset" if (path / "dataset").is_dir() else path
    if not (path / "dataset_dict.json").is_file():
        raise DataError(f"no prepared dataset at {path} (expected the output of prepare_dataset)")
    return datasets.load_from_disk(str(path))
