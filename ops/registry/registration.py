"""Register an adapter once: the registry lock, the idempotency check, and the result either way.

A rerun whose adapter is registered already (the tag `registration_fingerprint` names it) is answered from the
embedded sqlite registry without importing MLflow (ops/registry/sqlite_registry.py); a miss, a tracking server or
a registry this project cannot read directly goes through MLflow (ops/registry/register.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict

from ..core.locks import file_lock
from .aliases import alias_summary
from .sqlite_registry import NotReadable, registered_hit
from .tracking import sqlite_path


class Registration(BaseModel):
    """A registered adapter: which version holds it, where the alias stands, and how to load it."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    version: int
    alias: str
    run_id: Optional[str]  # the MLflow run that logged the model
    tracking_uri: str
    gate_decision: str  # champion, challenger, skipped (ops/registry/champion.py), or "" for an older version
    model_uri: str  # models:/NAME/VERSION: always this adapter's version
    alias_uri: str  # models:/NAME@ALIAS: moves with later registrations
    alias_version: Optional[int]  # where the alias points now (None: unset)
    version_aliases: list[str]  # every alias on this version
    cache_hit: bool = False  # a version already held this adapter; nothing was registered


@contextmanager
def registry_lock(tracking_uri: str, timeout_s: float = 900.0) -> Iterator[None]:
    """Held around registrations against a sqlite registry; a no-op for tracking servers."""
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    with file_lock(database.with_name(database.name + ".lock"), timeout_s):
        yield


def cached_registration(tracking_uri: str, registry_uri: str, name: str, alias: str, dedupe_tag: str,
                        value: str) -> Optional[Registration]:
    """The version of `name` tagged `dedupe_tag`=`value`, as a cache-hit Registration, or None when there is none.

    Read from the embedded sqlite registry when it can answer, else through MLflow's client (a tracking server,
    an unknown schema, or no such version in the database: a miss is always confirmed by MLflow).
    """
    try:
        hit = registered_hit(registry_uri, name, dedupe_tag, value)
    except NotReadable:
        hit = None
    if hit is not None:
        found, aliases = hit
        version, run_id, tags = found.version, found.run_id, found.tags
    else:
        from mlflow import MlflowClient

        from .register import find_version_by_tag

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        existing = find_version_by_tag(client, name, dedupe_tag, value)
        if existing is None:
            return None
        version, run_id, tags = int(existing.version), existing.run_id, existing.tags
        aliases = {a: int(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    return Registration(model_name=name, version=version, alias=alias, run_id=run_id, tracking_uri=tracking_uri,
                        gate_decision=tags.get("gate_decision", ""), cache_hit=True,
                        **alias_summary(name, version, alias, aliases))


def register_once(dedupe_tag: str = "registration_fingerprint", force: bool = False, **kwargs: Any) -> Registration:
    """`register_adapter(**kwargs)` unless a version tagged `dedupe_tag` with this value exists (then that
    version, with cache_hit True); the check and the registration happen under the registry lock.

    Either way `model_uri` names the version that holds this adapter (models:/NAME/VERSION): a cache hit does
    not move the alias, which may since point at another adapter's version (`alias_version` says which).

    Args:
        dedupe_tag: the tag (in `kwargs["tags"]`) that names what is registered.
        force: register a new version even when one already holds this adapter (still under the lock).
        kwargs: as for `ops.registry.register.register_adapter`.
    Returns:
        the version that holds the adapter.
    Raises:
        as `register_adapter`; TimeoutError when another registration holds the lock too long.
    """
    spec, value = kwargs["spec"], kwargs["tags"][dedupe_tag]
    tracking_uri, registry_uri = kwargs["tracking_uri"], kwargs.get("registry_uri") or kwargs["tracking_uri"]
    log: Callable[[str], Any] = kwargs.get("log", print)
    with registry_lock(tracking_uri):
        existing = None if force else cached_registration(tracking_uri, registry_uri, spec.model_name, spec.alias,
                                                          dedupe_tag, value)
        if existing is not None:
            log(f"{spec.model_name} version {existing.version} already holds this adapter")
            return existing
        from .register import register_adapter  # logging a model loads MLflow and the serving stack

        return register_adapter(**kwargs)
