"""Column mapping: data whose columns are named otherwise (question/answer, query/response) trains unrewritten."""

from __future__ import annotations

from .sources import DataError


def apply_columns(rows: list[dict], columns: dict[str, str], where: str) -> list[dict]:
    """`rows` with each mapped column renamed (source column -> the format's field); unmapped columns stay.

    Raises:
        DataError: two columns mapped to one field, a mapped column that no row has (naming it and the columns
            there are), or a target column the data already has, which the rename would overwrite.
    """
    if not columns:
        return rows
    targets = list(columns.values())
    twice = next((t for t in targets if targets.count(t) > 1), None)
    if twice:
        sources = [c for c, t in columns.items() if t == twice]
        raise DataError(f"{where}: columns maps {', '.join(map(repr, sources))} all to {twice!r}; map one column to each field")
    present = {key for row in rows for key in row}
    for column, field in columns.items():
        if column not in present:
            raise DataError(f"{where}: mapped column {column!r} (-> {field!r}) is in no row; its columns are "
                            f"{sorted(present)}")
        if field in present and field not in columns:
            raise DataError(f"{where}: columns maps {column!r} to {field!r}, but the data already has a column "
                            f"{field!r}; map or drop one of them")
    return [{columns.get(key, key): value for key, value in row.items()} for row in rows]
