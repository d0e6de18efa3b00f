"""Small matplotlib helpers for the benchmarks' PNG plots (headless: the Agg backend).

Plots are written to a fresh temporary folder; the harness copies the PNGs that run() lists next to the report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on CI or over ssh
    import matplotlib.pyplot as plt

    return plt


def plot_path(name: str) -> Path:
    """A path for a PNG named `name` in a temporary folder that outlives the process (the harness copies it)."""
    return Path(tempfile.mkdtemp(prefix="bench-plot-")) / f"{name}.png"


def bars(name: str, labels: list[str], values: list[float], ylabel: str, title: str,
         reference: float | None = None, reference_label: str = "") -> str:
    """A bar chart saved as PNG; `reference` draws a dashed horizontal line (e.g. a goal). Returns its path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, values, color="#4878a8")
    if reference is not None:
        ax.axhline(reference, color="#c44e52", linestyle="--", label=reference_label)
        ax.legend()
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    path = plot_path(name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def lines(name: str, x: list[float], series: dict[str, list[float]], xlabel: str, ylabel: str, title: str,
          log_x: bool = False) -> str:
    """One line per series over `x`, saved as PNG. Returns its path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", label=label)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = plot_path(name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
