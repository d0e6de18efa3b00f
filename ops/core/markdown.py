"""Markdown tables of records, for the Dagster UI's metadata and the MLflow run's report: one format for both."""

from __future__ import annotations

from typing import Any


def md_table(rows: list[dict[str, Any]], max_chars: int = 80) -> str:
    """A markdown table of dicts (columns from the first row); cells cut to `max_chars`, pipes escaped,
    newlines shown as ⏎, floats to 4 decimals. An empty list gives `_empty_`."""
    if not rows:
        return "_empty_"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        text = text.replace("|", "\\|").replace("\n", "⏎")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
