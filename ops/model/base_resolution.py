"""Resolve the base model: the embedded default, a local directory, or a hub id, with its identity for lineage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..core.atomic import atomic_dir
from ..core.fingerprint import hash_file, hash_tree
from ..core.paths import BUNDLED_DATASET, qlora_home
from .embedded import EMBEDDED_ID, build_embedded_base, builder_version


class BaseModelError(ValueError):
    pass


@dataclass(frozen=True)
class ResolvedBase:
    """Where to load the base from (a local path or a hub id) and what identifies its content."""

    model_id: str
    source: str
    is_local: bool
    identity: dict = field(default_factory=dict)
    revision: str | None = None


def looks_like_path(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or Path(model_id).exists()


def check_model_dir(path: Path, allow_pickle: bool = False, trust_remote_code: bool = False) -> None:
    """A local model directory must hold config.json and safetensors weights (pickle only when opted in),
    and may run its own Python code only when opted in."""
    if not path.is_dir():
        raise BaseModelError(f"base model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise BaseModelError(f"base model directory {path} has no config.json: not a transformers model folder")
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError as err:
        raise BaseModelError(f"base model directory {path}: config.json is not valid JSON ({err})") from None
    if config.get("auto_map") and not trust_remote_code:
        raise BaseModelError(
            f"base model {path} needs its own Python code to load (config.json has auto_map: "
            f"{', '.join(sorted(config['auto_map']))}); that code would run on this machine. Read it, then set "
            "trust_remote_code: true on the base_model resource to allow it."
        )
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.glob("*.bin"))
    if pickles and not allow_pickle:
        raise BaseModelError(
            f"base model directory {path} holds only pickle weights ({', '.join(pickles)}); pickle can run code "
            "when loaded. Convert them to safetensors, or set allow_pickle_weights: true if you trust the source."
        )
    if not pickles:
        raise BaseModelError(f"base model directory {path} holds no weights (*.safetensors or *.bin)")


def embedded_base_dir(home: Path | None = None) -> Path:
    """Build the embedded default once under the data home, atomically, and return its directory.

    The folder is named by the builder's code version and the bundled data's hash, so a change to either
    builds anew instead of serving a base built by other code or from other data.
    """
    data_hash = hash_file(BUNDLED_DATASET)[:12]
    final = (home or qlora_home()) / "base_models" / f"tiny-llama-{builder_version()}-{data_hash}"
    if not (final / "config.json").is_file():
        with atomic_dir(final, is_complete=lambda d: (d / "config.json").is_file()) as tmp:
            build_embedded_base(tmp)
    return final


def resolve_base(
    model_id: str, revision: str | None = None, allow_pickle: bool = False, home: Path | None = None,
    trust_remote_code: bool = False,
) -> ResolvedBase:
    if not model_id or not model_id.strip():
        raise BaseModelError("model_id is empty: name a hub id, a local directory, or 'embedded:tiny-llama'")
    if model_id == EMBEDDED_ID:
        path = embedded_base_dir(home)
        return ResolvedBase(model_id, str(path), True, {"model_id": model_id, "content_hash": hash_tree(path)})
    if model_id.startswith("embedded:"):
        raise BaseModelError(f"unknown embedded model {model_id!r}; the only one is {EMBEDDED_ID!r}")
    if looks_like_path(model_id):
        path = Path(model_id).expanduser().resolve()
        check_model_dir(path, allow_pickle, trust_remote_code)
        return ResolvedBase(model_id, str(path), True, {"model_id": str(path), "content_hash": hash_tree(path)})
    # A hub id: pin what we can; the revision is recorded in lineage ("main" moves, a commit sha does not).
    rev = revision or "main"
    return ResolvedBase(model_id, model_id, False, {"model_id": model_id, "revision": rev}, rev)
