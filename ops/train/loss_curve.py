"""The loss curve as a picture: training loss per logging step, and eval loss where training evaluated.

One PNG serves the Dagster UI (the qlora_adapter asset's metadata, behind "Show Markdown") and the MLflow run (an
artifact). Dagster's UI renders Markdown metadata inline only under 1,000 characters, so the asset page also gets
a small SVG sparkline that fits (`markdown_sparkline`).
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


DAGSTER_INLINE_MARKDOWN_CHARS = 1000  # dagster-webserver shows longer Markdown metadata behind a button instead


def _downsample(history: LossHistory, points: int) -> list[tuple[int, float]]:
    """At most `points` entries of `history`, evenly spaced, first and last kept."""
    history = list(history)
    if len(history) <= points:
        return history
    step = (len(history) - 1) / (points - 1)
    return [history[round(i * step)] for i in range(points)]


def sparkline_svg(train: LossHistory, eval_: LossHistory = (), points: int = 40, width: int = 300,
                  height: int = 60) -> str:
    """A compact SVG of the loss curves: train in blue, eval in orange, on one shared scale (no axes).

    Args:
        train, eval_: (step, loss) histories; at most `points` of each are drawn.
        width, height: the picture's size in pixels.
    Raises:
        ValueError: both histories are empty.
    """
    train, eval_ = _downsample(train, points), _downsample(eval_, points)
    everything = train + eval_
    if not everything:
        raise ValueError("no loss history to draw: training logged no loss")
    steps, losses = [s for s, _ in everything], [l for _, l in everything]
    s0, s1, lo, hi = min(steps), max(steps), min(losses), max(losses)

    def polyline(history: list[tuple[int, float]], colour: str) -> str:
        xy = " ".join(f"{round((s - s0) / max(s1 - s0, 1) * (width - 4)) + 2},"
                      f"{round((hi - l) / max(hi - lo, 1e-12) * (height - 4)) + 2}" for s, l in history)
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{xy}"/>' if history else ""

    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f"{polyline(train, '#1f77b4')}{polyline(eval_, '#ff7f0e')}</svg>")


def markdown_sparkline(train: LossHistory, eval_: LossHistory = ()) -> str:
    """`sparkline_svg` as a Markdown image short enough for Dagster's UI to show inline (fewer points until it is);
    the alt text gives the first and last training loss."""
    import base64

    ends = f"loss {train[0][1]:.3g} to {train[-1][1]:.3g}" if train else "eval loss"
    for points in (40, 30, 20, 12, 8, 4, 2):
        svg = sparkline_svg(train, eval_, points)
        text = f"![{ends}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"
        if len(text) < DAGSTER_INLINE_MARKDOWN_CHARS:
            return text
    raise ValueError("a two-point sparkline does not fit Dagster's inline Markdown limit")
