"""A warm run's registry questions answered from MLflow's embedded sqlite database with Python's sqlite3, without
importing MLflow (4-5 s of a fully cached rerun on two cores, issue 12).

Two questions, read-only (`mode=ro`), read afresh each time (a hit means the version exists now):
- which version of model M carries tag K=V (registration's cache hit), with its tags and the model's aliases;
- which version holds the `champion` alias, and its value on a metric (the regression check).

Only the schema MLflow 3.x writes is read (every column used is checked with PRAGMA table_info), in the single
default workspace. What cannot be answered here (another URI kind, a missing file, an unknown schema, workspaces
on, a run the tracking tables lack) raises NotReadable, and the caller asks MLflow, as before.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import quote

from .tracking import sqlite_path

# MLflow 3.x's tables and the columns read here (mlflow/store/model_registry/dbmodels/models.py,
# mlflow/store/tracking/dbmodels/models.py).
REGISTRY_COLUMNS = {
    "registered_models": {"workspace", "name"},
    "model_versions": {"workspace", "name", "version", "run_id", "current_stage"},
    "model_version_tags": {"workspace", "name", "version", "key", "value"},
    "registered_model_aliases": {"workspace", "name", "alias", "version"},
}
TRACKING_COLUMNS = {"runs": {"run_uuid"}, "latest_metrics": {"run_uuid", "key", "value", "is_nan"}}
DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME: every row without workspaces
DELETED_STAGE = "Deleted_Internal"  # a deleted version's current_stage (model_version_stages.STAGE_DELETED_INTERNAL)


@dataclass(frozen=True)
class VersionRow:
    """A registered version as MLflow's client would return it: number, run and tags."""

    name: str
    version: int
    run_id: Optional[str]
    tags: dict[str, str] = field(default_factory=dict)


class NotReadable(Exception):
    """This registry cannot be answered from here: not an existing embedded sqlite file, a schema this module does
    not know, MLflow workspaces on, or a read that failed. The caller asks MLflow instead."""


def workspaces_enabled() -> bool:
    """MLflow then scopes every row by the active workspace; this module reads the default one only."""
    return os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() not in ("", "0", "false")


def _check_schema(conn: sqlite3.Connection, tables: dict[str, set[str]]) -> None:
    for table, columns in tables.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}  # table names are ours, not input
        if not columns <= present:
            raise NotReadable(f"table {table} lacks columns {sorted(columns - present)}")


@contextmanager
def read_snapshot(uri: str, tables: dict[str, set[str]]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the embedded registry `uri`, inside one read transaction (a consistent snapshot).

    Raises:
        NotReadable: `uri` is not an existing sqlite file whose tables have `tables`' columns, MLflow workspaces
            are on, or sqlite failed (e.g. still locked after its timeout).
    """
    database = sqlite_path(uri)
    if database is None or not database.is_file():
        raise NotReadable(f"{uri} is not an existing embedded sqlite registry")
    if workspaces_enabled():
        raise NotReadable("MLflow workspaces are on")
    try:
        # mode=ro: never create, migrate or write; isolation_level=None: the BEGIN below is ours. The timeout waits
        # out a registration's write transaction, as MLflow's own engine would.
        conn = sqlite3.connect(f"file:{quote(str(database.resolve()))}?mode=ro", uri=True, isolation_level=None,
                               timeout=30.0)
    except sqlite3.Error as err:
        raise NotReadable(f"cannot open {database} read-only ({err})") from err
    try:
        conn.execute("BEGIN")
        _check_schema(conn, tables)
        yield conn
    except sqlite3.Error as err:
        raise NotReadable(f"reading {database} failed ({err})") from err
    finally:
        conn.close()


def _version(conn: sqlite3.Connection, name: str, version: int, run_id: Optional[str]) -> VersionRow:
    tags = dict(conn.execute("SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?",
                             (DEFAULT_WORKSPACE, name, version)).fetchall())
    return VersionRow(name, int(version), run_id, tags)


def _aliases(conn: sqlite3.Connection, name: str) -> dict[str, int]:
    rows = conn.execute("SELECT alias, version FROM registered_model_aliases WHERE workspace = ? AND name = ?",
                        (DEFAULT_WORKSPACE, name)).fetchall()
    return {alias: int(version) for alias, version in rows}


def registered_hit(uri: str, name: str, key: str, value: str) -> Optional[tuple[VersionRow, dict[str, int]]]:
    """The newest undeleted version of `name` whose tag `key` equals `value` (what MLflow's search_model_versions
    with `name = ... and tags.key = ...` finds, highest version first) and the model's aliases (alias -> version),
    read in one snapshot; None when no version carries the tag.

    Raises:
        NotReadable: as `read_snapshot`.
    """
    with read_snapshot(uri, REGISTRY_COLUMNS) as conn:
        row = conn.execute(
            "SELECT v.version, v.run_id FROM model_versions v JOIN model_version_tags t"
            " ON t.workspace = v.workspace AND t.name = v.name AND t.version = v.version"
            " WHERE v.workspace = ? AND v.name = ? AND v.current_stage != ? AND t.key = ? AND t.value = ?"
            " ORDER BY v.version DESC LIMIT 1", (DEFAULT_WORKSPACE, name, DELETED_STAGE, key, value)).fetchone()
        return None if row is None else (_version(conn, name, row[0], row[1]), _aliases(conn, name))


def alias_holder(uri: str, name: str, alias: str) -> Optional[VersionRow]:
    """The undeleted version of model `name` that `alias` names (MlflowClient.get_model_version_by_alias), or None
    when the model, the alias or its version does not exist (where MLflow raises).

    Raises:
        NotReadable: as `read_snapshot`.
    """
    with read_snapshot(uri, REGISTRY_COLUMNS) as conn:
        row = conn.execute(
            "SELECT v.version, v.run_id FROM registered_model_aliases a JOIN model_versions v"
            " ON v.workspace = a.workspace AND v.name = a.name AND v.version = a.version"
            " JOIN registered_models m ON m.workspace = a.workspace AND m.name = a.name"
            " WHERE a.workspace = ? AND a.name = ? AND a.alias = ? AND v.current_stage != ?",
            (DEFAULT_WORKSPACE, name, alias, DELETED_STAGE)).fetchone()
        return None if row is None else _version(conn, name, row[0], row[1])


def run_metric(uri: str, run_id: str, metric: str) -> Optional[float]:
    """The latest value run `run_id` logged for `metric` (MlflowClient.get_run(...).data.metrics), None when it
    logged none.

    Raises:
        NotReadable: as `read_snapshot`, or no such run (MLflow's get_run raises: the caller lets it say why).
    """
    with read_snapshot(uri, TRACKING_COLUMNS) as conn:
        if conn.execute("SELECT 1 FROM runs WHERE run_uuid = ?", (run_id,)).fetchone() is None:
            raise NotReadable(f"no run {run_id} in {uri}")
        row = conn.execute("SELECT value, is_nan FROM latest_metrics WHERE run_uuid = ? AND key = ?",
                           (run_id, metric)).fetchone()
    if row is None:
        return None
    return float("nan") if row[1] else float(row[0])
