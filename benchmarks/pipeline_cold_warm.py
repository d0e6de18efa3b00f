"""The whole pipeline cold and warm: a run from an empty data home, then reruns where every step is a cache hit.

    python -m benchmarks.pipeline_cold_warm

Each run is the headless command (`python -m pipelines.run`) in its own process, on configs/demo.yaml with training
shortened to BENCH_COLD_MAX_STEPS steps (default 100, against the demo's 600) so the benchmark fits its budget; the
cold figure says which. A third warm run under `python -X importtime` says where the warm run's time goes.
Goal (issue 12, figure 5): a warm run takes at most 5% of a cold one, and under 5 s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
WARM_RATIO_GOAL, WARM_SECONDS_GOAL = 0.05, 5.0
# The libraries a rerun pays for when it imports them; each is summed over the modules it is the root of.
LIBRARIES = ("dagster", "mlflow", "torch", "transformers", "peft", "bitsandbytes", "datasets", "evaluate", "pandas",
             "numpy", "scipy", "sqlalchemy", "alembic", "pydantic", "yaml")
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def bench_config(home: Path, max_steps: int) -> Path:
    """configs/demo.yaml with training cut to `max_steps`, written under `home`'s parent."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["ops"]["qlora_adapter"]["config"]["max_steps"] = max_steps
    path = home.parent / "demo-bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_pipeline(config: Path, home: Path, *python_flags: str) -> dict:
    """One headless run in a fresh process: wall seconds, seconds to its first line and to its first step line,
    whether every step was a cache hit, and its output lines."""
    env = {**os.environ, "QLORA_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("DAGSTER_HOME", None)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, *python_flags, "-m", "pipelines.run", str(config)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []
    for line in proc.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
    code = proc.wait()
    wall = time.monotonic() - started
    output = [text for _, text in lines if not text.startswith("import time:")]
    if code != 0:
        raise RuntimeError(f"pipeline run failed (exit {code}): " + "\n".join(output[-20:]))
    stamps = [(t, text) for t, text in lines if not text.startswith("import time:")]
    step_lines = [t for t, text in stamps if re.match(r"^\d\d:\d\d:\d\d \S+", text)]
    summary = [text for text in output if re.match(r"^\w+ +(cache hit|computed) ", text)]
    return {"wall_s": wall, "first_line_s": stamps[0][0] if stamps else wall,
            "first_step_line_s": step_lines[0] if step_lines else wall,
            "all_cache_hits": len(summary) == 5 and all(" cache hit " in s for s in summary),
            "lines": [text for _, text in lines]}


def import_breakdown(lines: list[str], top: int = 12) -> tuple[list[dict], dict[str, float]]:
    """From `-X importtime` output: the slowest modules the program imported itself (cumulative seconds), and the
    seconds each library in LIBRARIES took (its root module's cumulative time, wherever it was first imported)."""
    rows = []
    for line in lines:
        match = IMPORT_LINE.match(line)
        if match:
            rows.append((len(match.group(3)) // 2, match.group(4), int(match.group(2)) / 1e6))
    direct = sorted(({"module": name, "cumulative_s": round(s, 3)} for depth, name, s in rows if depth == 0),
                    key=lambda r: -r["cumulative_s"])
    libraries = {lib: round(max((s for _, name, s in rows if name == lib), default=0.0), 3) for lib in LIBRARIES}
    return direct[:top], libraries


def run() -> dict:
    max_steps = int(os.environ.get("BENCH_COLD_MAX_STEPS", "100"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-cold-warm-") as tmp:
        home = Path(tmp) / "qlora-home"
        config = bench_config(home, max_steps)
        cold = run_pipeline(config, home)
        warm = [run_pipeline(config, home) for _ in range(2)]
        traced = run_pipeline(config, home, "-X", "importtime")
    load_after = os.getloadavg()
    best = min(warm, key=lambda r: r["wall_s"])
    ratio = best["wall_s"] / cold["wall_s"]
    top_modules, libraries = import_breakdown(traced["lines"])
    imported_total = sum(r["cumulative_s"] for r in import_breakdown(traced["lines"], top=10**6)[0])
    figures = {
        "cold_s": round(cold["wall_s"], 2), "cold_max_steps": max_steps,
        "warm_s": round(best["wall_s"], 2),  # each warm run is a row of the table
        "warm_over_cold": round(ratio, 4),
        "warm_first_line_s": round(best["first_line_s"], 2), "warm_first_step_line_s": round(best["first_step_line_s"], 2),
        "cold_first_line_s": round(cold["first_line_s"], 2),
        "warm_import_s_under_importtime": round(imported_total, 2),
        "warm_all_cache_hits": int(all(r["all_cache_hits"] for r in (*warm, traced))),  # 1: yes (figures are numbers)
        "load_average_before": round(load_before[0], 2), "load_average_after": round(load_after[0], 2),
        "cpu_count": os.cpu_count(),
        **{f"import_{lib}_s": s for lib, s in libraries.items()},
    }
    table = [{"run": f"cold (empty data home, {max_steps} training steps)", "wall_s": figures["cold_s"],
              "first_line_s": figures["cold_first_line_s"]}]
    table += [{"run": f"warm {i + 1} (all cache hits)", "wall_s": round(r["wall_s"], 2),
               "first_line_s": round(r["first_line_s"], 2)} for i, r in enumerate(warm)]
    table += [{"run": f"import (warm run, -X importtime): {r['module']}", "wall_s": r["cumulative_s"],
               "first_line_s": ""} for r in top_modules]
    return {
        "name": "pipeline_cold_warm",
        "title": "Whole pipeline: cold run against a fully cached rerun",
        "goal": f"warm <= {WARM_RATIO_GOAL:.0%} of cold, and warm < {WARM_SECONDS_GOAL:g} s",
        "met": bool(figures["warm_all_cache_hits"] and ratio <= WARM_RATIO_GOAL and best["wall_s"] < WARM_SECONDS_GOAL),
        "figures": figures,
        "table": table,
        "notes": (f"configs/demo.yaml with qlora_adapter.max_steps={max_steps} (the demo trains 600), fresh QLORA_HOME; "
                  "each run is `python -m pipelines.run` in its own process, timed from its start to its exit; warm_s "
                  "is the faster of two reruns. The import rows and import_*_s come from a third rerun under "
                  "`python -X importtime` (cumulative seconds, which that flag inflates a little). Load average: "
                  f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} CPUs."),
        "plots": [],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
