"""The loss pictures: a PNG chart, and an SVG sparkline short enough for Dagster's UI to show inline."""

import base64
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from ops.train.loss_curve import markdown_sparkline, plot_loss_curve, sparkline_svg


def test_sparkline_scales_train_and_eval_onto_one_picture():
    svg = ET.fromstring(sparkline_svg([(0, 6.0), (10, 4.0), (20, 2.0)], [(10, 5.0), (20, 3.0)], width=104, height=44))
    train, held_out = (line.get("points").split() for line in svg)
    assert train == ["2,2", "52,22", "102,42"]  # 6 at the top, 2 at the bottom, steps 0-20 across
    assert held_out == ["52,12", "102,32"]


@pytest.mark.parametrize("n", [3, 600, 5000])
def test_markdown_sparkline_fits_dagsters_inline_limit(n):
    history = [(step, 6.0 - 4.0 * step / n) for step in range(n + 1)]  # 6 at step 0 down to 2
    text = markdown_sparkline(history, history[:: max(1, n // 20)])
    assert len(text) < 1000 and text.startswith("![loss 6 to 2](data:image/svg+xml;base64,")
    ET.fromstring(base64.b64decode(text.split("base64,")[1][:-1]))  # well-formed SVG


def test_plot_writes_a_png_and_refuses_an_empty_history(tmp_path):
    path = plot_loss_curve([(1, 3.0), (2, 2.5)], tmp_path / "curve.png", [(2, 2.7)], best_step=2)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size[0] >= 600
    with pytest.raises(ValueError, match="no loss history"):
        plot_loss_curve([], tmp_path / "empty.png")
