"""Benchmarks (issue 12): each `benchmarks/<name>.py` with a `run() -> dict` is one benchmark.

`python -m benchmarks` (or `make bench`) runs them all, each in its own subprocess with a time limit, and writes
benchmarks/results.json and BENCHMARKS.md; `python -m benchmarks NAME...` runs a subset. Modules whose name starts
with `_` are helpers, never run.
"""
