"""The loss curve as a picture: training loss per logging step, and eval loss where training evaluated.

One PNG serves the Dagster UI (the qlora_adapter asset's metadata) and the MLflow run (an artifact).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

LossHistory = Sequence[tuple[int, float]]  # (optimizer step, loss in nats per target token)
LOSS_CURVE_FILE = "loss_curve.png"  # in the qlora_adapter artifact, beside train_summary.json


def plot_loss_curve(train: LossHistory, path: str | Path, eval_: LossHistory = (), title: str = "QLoRA loss",
                    best_step: int | None = None) -> Path:
    """Write a PNG of the loss curves (about 800 x 450 pixels) and return its path.

    Args:
        train: training loss at each logging step.
        path: the PNG file to write (parent folders are made).
        eval_: eval loss at each evaluation during training (may be empty).
        title: the figure's title.
        best_step: a step to mark (the checkpoint kept as the adapter), or None.
    Raises:
        ValueError: both histories are empty (there is nothing to draw).
    """
    if not train and not eval_:
        raise ValueError("no loss history to plot: training logged no loss")
    import matplotlib

    matplotlib.use("Agg")  # no display: steps run headless, in worker processes
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        if train:
            ax.plot(*zip(*train), label="train loss", color="tab:blue")
        if eval_:
            ax.plot(*zip(*eval_), label="eval loss", color="tab:orange", marker="o")
        if best_step is not None:
            ax.axvline(best_step, color="tab:green", linestyle="--", label=f"best step {best_step}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats per target token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def markdown_image(path: str | Path, alt: str = "loss curve") -> str:
    """The PNG at `path` as a Markdown image with a data URI (Dagster's UI renders it inline in asset metadata)."""
    import base64

    return f"![{alt}](data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()})"
