"""Field checks the step settings share, each raising one line that names the field and the bad value."""

from __future__ import annotations


def positive(name: str, value: float) -> float:
    """`value` when it is > 0.

    Raises:
        ValueError: "<name> must be > 0, got <value>".
    """
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def non_negative(name: str, value: float) -> float:
    """`value` when it is >= 0.

    Raises:
        ValueError: "<name> must be >= 0, got <value>".
    """
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value
