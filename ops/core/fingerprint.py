"""Content fingerprints: stable hashes of configs, files and folders that name cached artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FINGERPRINT_LEN = 16  # 64 bits: plenty to keep one project's artifacts apart, short enough to read in a path


def stable_hash(obj: Any) -> str:
    """Hash a JSON-able object independently of dict order."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:FINGERPRINT_LEN]


def fingerprint(code_version: str, config: dict[str, Any], inputs: dict[str, str] | None = None) -> str:
    """An asset's fingerprint: its code version, its own config and its inputs' fingerprints."""
    return stable_hash({"code": code_version, "config": config, "inputs": inputs or {}})


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(root: Path, pattern: str = "*") -> str:
    """Hash every file under `root` (names and contents), in sorted order."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(hash_file(path).encode())
    return h.hexdigest()[:FINGERPRINT_LEN]


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, keyed by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): hash_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


class ChecksumMismatch(ValueError):
    pass


def verify_checksums(root: Path, expected: dict[str, str], what: str = "files") -> None:
    """Refuse `root` unless its files are exactly those recorded in `expected` (path -> sha256)."""
    actual = file_checksums(root)
    changed = sorted(p for p in expected if actual.get(p) != expected[p])
    added = sorted(set(actual) - set(expected))
    if changed or added:
        detail = ", ".join([f"{p} (changed or missing)" for p in changed] + [f"{p} (not registered)" for p in added])
        raise ChecksumMismatch(f"{what} in {root} do not match the checksums recorded at registration: {detail}. "
                               "Refusing to load a tampered or corrupted model.")
