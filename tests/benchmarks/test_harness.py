"""The benchmark harness on fake benchmark modules, each run for real in its own subprocess.

One module meets its goal and writes a plot, one raises, one hangs past the time limit, one returns a result
that breaks the convention, and one has no run() (so it is not a benchmark). The harness must report each in
BENCHMARKS.md and results.json and carry on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import check_result, discover

ROOT = Path(__file__).resolve().parents[2]

GOOD = '''
import os, time
def run():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.bar(["a", "b"], [1, 2])
    path = os.path.join(os.environ["FAKE_PLOT_DIR"], "bars.png")
    fig.savefig(path)
    print("noise on stdout that must not garble the result")
    return {"name": "good", "title": "A good benchmark", "goal": ">= 1.0x", "met": True,
            "figures": {"ratio": 1.25, "steps": 3}, "table": [{"variant": "x", "tokens/s": 1234.5678}],
            "notes": "It measured a thing.", "plots": [path]}
'''
RAISES = 'def run():\n    raise RuntimeError("the model would not load\\nsecond line")\n'
HANGS = 'import time\ndef run():\n    time.sleep(600)\n'
BAD = 'def run():\n    return {"name": "bad", "title": "t", "goal": "g", "met": "yes", "figures": {}, "table": [], "notes": "", "plots": []}\n'
HELPER = 'VALUE = 1\n'


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory):
    """Run `python -m benchmarks` over the fake modules once: (results.json, BENCHMARKS.md text, stdout)."""
    work = tmp_path_factory.mktemp("harness")
    bench = work / "fake_benchmarks"
    bench.mkdir()
    for name, text in {"good": GOOD, "raises": RAISES, "hangs": HANGS, "bad": BAD, "helper": HELPER,
                       "_private": GOOD}.items():
        (bench / f"{name}.py").write_text(text)
    plot_dir = work / "scratch"
    plot_dir.mkdir()
    out = work / "out"
    cmd = [sys.executable, "-m", "benchmarks", "--dir", str(bench), "--json", str(out / "results.json"),
           "--markdown", str(work / "BENCHMARKS.md"), "--timeout", "20", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FAKE_PLOT_DIR": str(plot_dir)})
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "results.json").read_text()), (work / "BENCHMARKS.md").read_text(), proc.stdout, work


def test_discovery_finds_modules_with_run_only(tmp_path):
    (tmp_path / "a.py").write_text("def run():\n    return {}\n")
    (tmp_path / "b.py").write_text("def helper():\n    pass\n")
    (tmp_path / "_c.py").write_text("def run():\n    pass\n")
    assert list(discover(tmp_path)) == ["a"]


@pytest.mark.slow  # starts subprocesses
def test_results_json_has_every_benchmark_with_its_status(harness_run):
    results, _, _, work = harness_run
    entries = results["benchmarks"]
    assert list(entries) == ["bad", "good", "hangs", "raises"]  # helper and _private are not benchmarks
    assert {n: e["status"] for n, e in entries.items()} == {
        "bad": "bad_result", "good": "ok", "hangs": "timed_out", "raises": "failed"}
    assert entries["good"]["result"]["figures"] == {"ratio": 1.25, "steps": 3}
    # the plot's temporary path is replaced by the kept copy's, in the entry and in the result
    assert entries["good"]["result"]["plots"] == entries["good"]["plots"] == [str(work / "out/plots/good/bars.png")]
    assert entries["raises"]["error"] == "RuntimeError: the model would not load"
    assert "Traceback" in entries["raises"]["output_tail"]
    assert "'met'" in entries["bad"]["error"]
    assert 20 <= entries["hangs"]["seconds"] < 60  # killed at the limit, not left to sleep
    machine = results["machine"]
    assert set(machine["flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    assert machine["cores"] >= 1 and machine["omp_threads"] == 1 and len(machine["load_average"]) == 3


@pytest.mark.slow  # starts subprocesses
def test_markdown_reports_each_benchmark(harness_run):
    _, md, stdout, work = harness_run
    assert md.startswith("# Benchmarks")
    for text in ("CPU flags", "avx512_bf16", "torch CPU capability", "load average"):
        assert text in md
    flat = re.sub(r" {2,}", " ", md)  # table cells without their column padding
    assert "| good | >= 1.0x | met |" in flat
    assert "## A good benchmark" in md and "It measured a thing." in md
    assert "| ratio | 1.25 |" in flat
    assert "| x | 1235 |" in flat  # the table's float cell, four significant digits  # the table's float cell, four significant digits
    assert "the model would not load" in md and "time limit" in md and "bad result" in md
    assert "python -m benchmarks --dir" in md
    plot = work / "out" / "plots" / "good" / "bars.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![bars](out/plots/good/bars.png)" in md
    assert "[bench] hangs: timed out" in stdout


@pytest.mark.slow  # starts subprocesses
def test_a_subset_rerun_keeps_the_other_results(harness_run):
    results, _, _, work = harness_run
    out = work / "out" / "results.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--dir", str(work / "fake_benchmarks"),
                           "--json", str(out), "--markdown", str(work / "BENCHMARKS.md"), "bad"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rerun = json.loads(out.read_text())["benchmarks"]
    assert set(rerun) == set(results["benchmarks"])
    assert rerun["good"] == results["benchmarks"]["good"]
    unknown = subprocess.run([sys.executable, "-m", "benchmarks", "--dir", str(work / "fake_benchmarks"), "nope"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "no benchmark named nope" in unknown.stderr


@pytest.mark.parametrize("result, problem", [
    ([], "returned list, not a dict"),
    ({"name": "n", "title": "t", "goal": "g", "met": None, "figures": {"x": "1"}, "table": [], "notes": "",
      "plots": []}, "figures ['x'] are not numbers"),
    ({"name": "n", "title": "t", "goal": "g", "met": None, "figures": {}, "table": [], "notes": ""},
     "'plots' is NoneType, expected list"),
])
def test_check_result_names_the_problem(result, problem):
    assert problem in check_result(result)
