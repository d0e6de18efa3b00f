"""Registry aliases: which names MLflow reserves, and where a model's aliases stand after a registration."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no MLflow import here: a cached registration reads the aliases without it
    from mlflow import MlflowClient

RESERVED_ALIASES = ("latest",)  # MLflow also reserves version-like aliases: v1, V2, ...


def check_alias(alias: str) -> str:
    """Reject aliases MLflow reserves, before any run is created."""
    if alias.lower() in RESERVED_ALIASES or (alias[:1] in "vV" and alias[1:].isdigit()):
        raise ValueError(f"alias {alias!r} is reserved by MLflow ('latest' and v<number>); choose another")
    return alias


def alias_summary(name: str, version: int | str, alias: str, aliases: dict[str, int]) -> dict:
    """How to load a registered version, and where its aliases stand, given the model's aliases (alias -> version).

    `model_uri` names the version itself (models:/NAME/VERSION), so it always loads this adapter; an alias
    (`alias_uri`) moves with later registrations and the gate, so it may have moved on (`alias_version`).
    """
    return {"model_uri": f"models:/{name}/{version}", "alias_uri": f"models:/{name}@{alias}",
            "alias_version": aliases.get(alias),
            "version_aliases": sorted(a for a, v in aliases.items() if v == int(version))}


def version_summary(client: MlflowClient, name: str, version: int | str, alias: str) -> dict:
    """`alias_summary` with the model's aliases read through MLflow's client."""
    aliases = {a: int(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    return alias_summary(name, version, alias, aliases)
