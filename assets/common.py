"""What every asset shares: the `force` option, the config part of a fingerprint, and the step's Output."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import BaseModel, Field

from ops.core.markdown import md_table, readable, significant  # noqa: F401  (md_table re-exported: the assets' tables)
from ops.core.store import StepResult


class StepConfig(dg.Config):
    force: bool = Field(False, description="Recompute this step even when a cached artifact with this fingerprint exists.")

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that decide the artifact's content (not `force`, which only decides whether to rebuild)."""
        return self.model_dump(exclude={"force"})


def typed_metadata(result: BaseModel, *names: str, **extra: Any) -> dict[str, Any]:
    """`names` of `result` as Dagster metadata typed by their Python type (int, float, str, bool), plus `extra`.

    Ints and floats become typed values (the UI plots them across materializations); floats are rounded to
    ops.core.markdown.SIGNIFICANT_DIGITS, since 0.2913876510143280 says no more to a reader than 0.2914; None becomes "".
    """
    def typed(value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, str):
            return value
        if isinstance(value, int):
            return dg.MetadataValue.int(value)
        if isinstance(value, float):
            return dg.MetadataValue.float(significant(value))
        return "" if value is None else str(value)

    return {**{name: typed(getattr(result, name)) for name in names}, **{k: typed(v) for k, v in extra.items()}}


def step_output(result: StepResult, metadata: dict[str, Any]) -> dg.Output:
    """The asset's output: the artifact reference, its metadata and the fingerprint as data version."""
    common = {
        "fingerprint": result.ref.fingerprint,
        "path": dg.MetadataValue.path(result.ref.path),
        "cache_hit": result.cache_hit,
    }
    return dg.Output(result.ref, metadata={**common, **metadata}, data_version=dg.DataVersion(result.ref.fingerprint))


def table_metadata(rows: list[dict[str, Any]]) -> dg.TableMetadataValue:
    """Rows of dicts as a Dagster table (columns from the first row): the UI shows it inline however long it is,
    where Markdown over 1,000 characters hides behind a button. Cells are readable strings (ops.core.markdown)."""
    columns = list(rows[0]) if rows else []
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: readable(r.get(c, "")) for c in columns}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]))
