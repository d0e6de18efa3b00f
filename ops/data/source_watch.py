"""What a data-triggered run watches: a fingerprint of the dataset source that changes exactly when its content does.

A local file is hashed, a local folder hashed file by file (names and contents), and a hub dataset is named by
its current commit (asked from the hub; None when the hub cannot be reached, so a sensor skips rather than fails).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.fingerprint import FINGERPRINT_LEN, hash_file, hash_tree, stable_hash
from .sources import DataError, resolve_source

DEFAULT_SOURCE = "bundled"


def hub_revision(dataset_id: str) -> Optional[str]:
    """The hub dataset's current commit sha, or None when the hub is unreachable (offline machines, CI)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(dataset_id).sha
    except Exception:  # offline, rate-limited or private: no answer is not a change
        return None


def source_fingerprint(source: str, revision_of: Callable[[str], Optional[str]] = hub_revision) -> Optional[str]:
    """A short fingerprint of what `source` holds now; None when it cannot be known (hub unreachable)."""
    try:
        path = resolve_source(source)  # the same resolution training_dataset uses
    except DataError as err:
        raise FileNotFoundError(f"watched dataset source: {err}") from None
    if path is not None:
        return hash_tree(path) if path.is_dir() else hash_file(path)[:FINGERPRINT_LEN]
    revision = revision_of(source)
    return None if revision is None else stable_hash({"hub": source, "revision": revision})


def run_key(source: str, fp: str) -> str:
    """One run per (source, content): the same data never triggers twice, even after the cursor is reset."""
    return f"data-{stable_hash(source)[:8]}-{fp}"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` merged in, nested mappings key by key; neither input is changed."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_source(run_config: dict[str, Any], source: str) -> dict[str, Any]:
    """The run config with training_dataset's source set to the watched one, so the run trains on what changed.

    A recipe with a `mixture` is kept as it is: the mixture names its sources, and its fingerprint covers all of
    them (setting `source` beside it would be refused); watch one of its sources to retrain when that one changes.
    """
    data = ((run_config.get("ops") or {}).get("training_dataset") or {}).get("config") or {}
    if data.get("mixture"):
        return copy.deepcopy(run_config)
    return deep_merge(run_config, {"ops": {"training_dataset": {"config": {"source": source}}}})


def retrain_run_config(source: str, config_path: Optional[str] = None) -> dict[str, Any]:
    """The run config of a retraining run: the YAML recipe at `config_path` (if any) with the watched source."""
    import yaml

    base: dict[str, Any] = {}
    if config_path:
        path = Path(config_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"retraining run config {path} does not exist")
        base = yaml.safe_load(path.read_text()) or {}
    return with_source(base, source)
