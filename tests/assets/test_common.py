"""Metadata as a person reads it: floats to four significant digits, typed so the UI can plot them."""

import math

import dagster as dg
from pydantic import BaseModel

from assets.common import significant, typed_metadata


def test_significant_keeps_four_digits_at_every_scale():
    assert significant(0.29138765101432804) == 0.2914
    assert significant(1234.5678) == 1235.0
    assert significant(0.000123456) == 0.0001235
    assert significant(2.0) == 2.0
    assert math.isnan(significant(float("nan"))) and significant(float("inf")) == float("inf")


def test_typed_metadata_rounds_floats_and_keeps_types():
    class Result(BaseModel):
        loss: float
        steps: int
        device: str
        run: str | None

    meta = typed_metadata(Result(loss=1.23456789, steps=600, device="cpu", run=None), "loss", "steps", "device", "run",
                          peak_mb=2589.123456)
    assert meta["loss"] == dg.MetadataValue.float(1.235) and meta["peak_mb"] == dg.MetadataValue.float(2589.0)
    assert meta["steps"] == dg.MetadataValue.int(600) and meta["device"] == "cpu" and meta["run"] == ""


def test_table_cells_are_readable_numbers():
    from ops.core.markdown import md_table, readable

    assert [readable(v) for v in (6.09951, 0.000123456, 0.00001234, 12345.6, 1500, 7, 0.0, "x", True)] == [
        "6.1", "0.0001235", "1.234e-05", "12,350", "1,500", "7", "0", "x", "True"]
    assert md_table([{"step": 1200, "loss": 2.345678}]).splitlines()[-1] == "| 1,200 | 2.346 |"
