"""Markdown tables of records, for the Dagster UI's metadata and the MLflow run's report: one format for both."""

from __future__ import annotations

import math
from typing import Any

SIGNIFICANT_DIGITS = 4  # what a reader compares: 0.2914, not 0.29138765101432804


def significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """`value` rounded to `digits` significant digits (1234.567 -> 1235.0, 0.000123456 -> 0.0001235);
    NaN and infinities unchanged."""
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


def readable(value: Any) -> str:
    """A table cell: floats to SIGNIFICANT_DIGITS, numbers of 1,000 and more with thousands separators
    (6.09951 -> 6.1, 0.000123456 -> 0.0001235, 12345.6 -> 12,350, 1500 -> 1,500); anything else as str()."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        value = significant(value)
        if abs(value) < 1000:
            return f"{value:g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.{SIGNIFICANT_DIGITS - 1}e}"
    return f"{value:,.0f}" if abs(value) >= 1000 else str(value)


def md_table(rows: list[dict[str, Any]], max_chars: int = 80) -> str:
    """A markdown table of dicts (columns from the first row); cells cut to `max_chars`, pipes escaped,
    newlines shown as ⏎, numbers `readable`. An empty list gives `_empty_`."""
    if not rows:
        return "_empty_"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        text = readable(v)
        text = text.replace("|", "\\|").replace("\n", "⏎")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
