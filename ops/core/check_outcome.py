"""What a quality check returns: whether it passed, one line saying why, and numbers to show in the UI."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check; the Dagster asset checks wrap it (assets/checks.py)."""

    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
