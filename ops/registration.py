"""Registering safely: never the same adapter twice, and one registration at a time on an embedded registry.

sqlite allows one writer; MLflow's registration is several transactions (model, version, tags, alias), and
concurrent ones fail with "database is locked" or interleave. A tracking server serialises for itself, so
the lock applies to sqlite URIs only. Holding it also makes check-then-register (idempotency) atomic.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mlflow import MlflowClient

from .locks import file_lock
from .registry import find_version_by_tag, register_adapter, version_summary


@contextmanager
def registry_lock(tracking_uri: str, timeout_s: float = 900.0) -> Iterator[None]:
    """Held around registrations against a sqlite registry; a no-op for tracking servers."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    with file_lock(Path(tracking_uri.removeprefix("sqlite:///") + ".lock"), timeout_s):
        yield


def register_once(dedupe_tag: str = "registration_fingerprint", **kwargs: Any) -> dict:
    """`register_adapter(**kwargs)` unless a version tagged `dedupe_tag` with this value exists (then that
    version, with cache_hit True); the check and the registration happen under the registry lock.

    Either way `model_uri` names the version that holds this adapter (models:/NAME/VERSION): a cache hit does
    not move the alias, which may since point at another adapter's version (`alias_version` says which).
    """
    spec, value = kwargs["spec"], kwargs["tags"][dedupe_tag]
    tracking_uri, registry_uri = kwargs["tracking_uri"], kwargs.get("registry_uri") or kwargs["tracking_uri"]
    with registry_lock(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        existing = find_version_by_tag(client, spec.model_name, dedupe_tag, value)
        if existing is not None:
            kwargs.get("log", print)(f"{spec.model_name} version {existing.version} already holds this adapter")
            return {"model_name": spec.model_name, "version": int(existing.version), "alias": spec.alias,
                    "run_id": existing.run_id, "tracking_uri": tracking_uri,
                    "gate_decision": existing.tags.get("gate_decision", ""), "cache_hit": True,
                    **version_summary(client, spec.model_name, existing.version, spec.alias)}
        return {**register_adapter(**kwargs), "cache_hit": False}
