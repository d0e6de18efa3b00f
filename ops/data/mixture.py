"""The sources of one dataset: each read, mapped, converted and checked on its own, then drawn into a mixture.

A single `source` is a mixture of one that keeps all its rows. With several, each source gives a `share` of the
final rows (all of them do, summing to 1) or a `max_rows` (or neither: all its rows); `DataSpec.max_rows` caps the
total. Draws are seeded samples that keep each file's row order, so a row is always named by its own file and line.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

from .sharegpt import to_chat
from .columns import apply_columns
from .sources import DataError, detect_format, load_rows, validate_rows
from .spec import DataSpec, SourceSpec

# Formats a chat mixture can turn into one-turn conversations, so the model is trained and served in one format.
# (user turn, assistant reply) of a row; alpaca's input follows its instruction after a blank line.
AS_CHAT = {
    "alpaca": lambda r: (r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), r["output"]),
    "prompt_completion": lambda r: (r["prompt"], r["completion"]),
}


@dataclass
class Part:
    """One source's rows, ready to render: `rows[i]` is row `row_numbers[i]` (1-based) of the source."""

    spec: SourceSpec
    where: str  # "dataset <source>", the prefix of its row errors
    own_format: str  # as given or detected (sharegpt stays sharegpt)
    format: str  # how its rows render: sharegpt rows are chat rows by now
    rows_loaded: int
    rows: list[dict] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)


def read_source(spec: SourceSpec) -> Part:
    """Load one source, rename its mapped columns, pick its format, convert ShareGPT to chat and check every row.

    Raises:
        DataError: from loading, the column map, detection, or the first bad row (named by the source's own row).
    """
    where = f"dataset {spec.source}"
    rows = apply_columns(load_rows(spec), spec.columns, where)
    own = detect_format(rows) if spec.format == "auto" else spec.format
    fmt = own
    if own == "sharegpt":
        fmt = "chat"
        converted = []
        for n, row in enumerate(rows, 1):
            try:
                converted.append(to_chat(row) if isinstance(row, dict) else row)
            except ValueError as e:
                raise DataError(f"{where}, row {n}: {e} (format sharegpt)") from None
        rows = converted
    validate_rows(rows, fmt, where=where)
    return Part(spec, where, own, fmt, len(rows), rows, list(range(1, len(rows) + 1)))


def allocate(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights` as whole numbers summing to `total` (largest remainder)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def draw_counts(sizes: list[int], specs: list[SourceSpec], cap: int | None) -> list[int]:
    """Rows to draw from each source: by shares (as many as the scarcest source allows), else by each max_rows;
    scaled down in proportion when `cap` (DataSpec.max_rows) is below the total."""
    if specs[0].share is not None:  # DataSpec checked that all sources have one
        # 1e-9: 30 / 0.3 is 99.999...; a float's error must not cost a row
        shares = [s.share / sum(x.share for x in specs) for s in specs]  # normalized: 0.33 x 3 is a third each
        total = min(math.floor(n / share + 1e-9) for n, share in zip(sizes, shares))
        counts = allocate(min(total, cap or total), shares)
        return [min(c, n) for c, n in zip(counts, sizes)]
    counts = [min(n, s.max_rows or n) for n, s in zip(sizes, specs)]
    return allocate(cap, counts) if cap is not None and sum(counts) > cap else counts


def harmonize(parts: list[Part]) -> str:
    """The one format the mixture renders in; alpaca and prompt_completion parts of a chat mixture become chats.

    Raises:
        DataError: formats that cannot be one (text beside chat, alpaca beside prompt_completion, ...).
    """
    formats = {p.format for p in parts}
    if len(formats) == 1:
        return formats.pop()
    if "chat" in formats and formats - {"chat"} <= set(AS_CHAT):
        for p in parts:
            if p.format != "chat":
                to_turn = AS_CHAT[p.format]
                p.rows = [{"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}
                          for u, a in map(to_turn, p.rows)]
                p.format = "chat"
        return "chat"
    named = ", ".join(f"{p.spec.source} is {p.own_format}" for p in parts)
    raise DataError(f"the mixture's sources cannot render in one format ({named}); a model trains and serves in one "
                    "format: give them the same format (alpaca and prompt_completion can join chat or sharegpt)")


def load_parts(spec: DataSpec, log: Callable[[str], None] = print) -> tuple[list[Part], str]:
    """Every source of `spec` read and drawn, and the format they all render in.

    Returns:
        (parts in the order given, format). A single source keeps all its rows; max_rows applies later, after
        deduplication, as before mixtures existed.
    Raises:
        DataError: as `read_source` and `harmonize`.
    """
    parts = [read_source(s) for s in spec.sources()]
    if spec.mixture:
        counts = draw_counts([p.rows_loaded for p in parts], [p.spec for p in parts], spec.max_rows)
        for i, (p, k) in enumerate(zip(parts, counts)):
            # seeded per source: the same spec draws the same rows on any machine
            chosen = sorted(random.Random(f"{spec.seed}:{i}").sample(range(p.rows_loaded), k))
            p.rows, p.row_numbers = [p.rows[j] for j in chosen], [p.row_numbers[j] for j in chosen]
            log(f"source {i + 1} {p.spec.source} ({p.own_format}): drew {k} of {p.rows_loaded} rows")
    return parts, harmonize(parts)
