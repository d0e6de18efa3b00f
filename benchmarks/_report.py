"""The machine a benchmark ran on, and BENCHMARKS.md written from the collected results (used by the harness).

Tables are rendered with tabulate (GitHub markdown); numbers keep four significant digits.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tabulate import tabulate

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what decides the CPU's bf16 and 4-bit kernel paths


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def git_commit(root: Path) -> str:
    """Short commit hash of `root`, with `+dirty` when tracked files differ from it; `unknown` outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        return f"{commit}+dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine(root: Path, threads: int) -> dict[str, Any]:
    """CPU model, flags, torch's CPU capability, cores, load average, date and commit: the header of the report."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        import torch  # imported here: the harness itself needs no torch, only this header line does
        capability, torch_version = torch.backends.cpu.get_cpu_capability(), torch.__version__
        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        capability = torch_version = cuda = "not installed"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(root),
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "flags": {flag: flag in flags for flag in FLAGS},
        "torch_capability": capability,
        "torch": torch_version,
        "gpu": cuda,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "omp_threads": threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def fmt(value: Any) -> Any:
    """A table cell: floats to four significant digits (thousands separated from 10,000), the rest unchanged."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def _table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    body = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    return tabulate(body, headers=columns, tablefmt="github", disable_numparse=True)


STATUS = {True: "met", False: "not met", None: "no verdict"}


def status_of(entry: dict) -> str:
    """`met`, `not met`, `no verdict` (met is None), or the failure: `failed`, `timed out`, `bad result`."""
    return STATUS[entry["result"].get("met")] if entry["status"] == "ok" else entry["status"].replace("_", " ")


def _section(name: str, entry: dict, md_dir: Path) -> list[str]:
    result = entry.get("result") or {}
    lines = [f"## {result.get('title') or name}", "",
             f"Benchmark `{name}`; goal: {result.get('goal') or '(none stated)'}; **{status_of(entry)}**.", "",
             f"Reproduce: `{entry['command']}`. Ran at commit {entry['commit']} on {entry['date']}, "
             f"{entry['seconds']:.0f} s"
             # a result run on another machine (the lent GPU) has no load figures of this one
             + (f", load average {entry['load_before']} before and {entry['load_after']} after"
                if entry.get("load_before") is not None else "")
             + (f", {entry['threads']} OMP threads." if entry.get("threads") else "."),
             ""]
    if entry["status"] != "ok":
        lines += [f"Error: {entry.get('error', '')}", ""]
        if entry.get("output_tail", "").strip():
            lines += ["```", entry["output_tail"].rstrip(), "```", ""]
        return lines
    if result.get("figures"):
        lines += [_table([{"figure": k, "value": v} for k, v in result["figures"].items()]), ""]
    if result.get("table"):
        lines += [_table(result["table"]), ""]
    if result.get("notes"):
        lines += [result["notes"].strip(), ""]
    for plot in entry.get("plots", []):
        where = Path(plot) if Path(plot).is_absolute() else Path(__file__).resolve().parent.parent / plot
        lines += [f"![{Path(plot).stem}]({os.path.relpath(where, md_dir)})", ""]
    return lines


def markdown(machine_info: dict, entries: dict[str, dict], md_path: Path) -> str:
    """BENCHMARKS.md: the machine, a summary table, then one section per benchmark."""
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in machine_info["flags"].items())
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`python -m benchmarks`; `python -m benchmarks NAME...` reruns some). "
             "Every figure is measured by the run named in its section; nothing is typed in.", "",
             _table([{"": "date", "value": machine_info["date"]}, {"": "commit", "value": machine_info["commit"]},
                     {"": "CPU", "value": machine_info["cpu"]}, {"": "CPU flags", "value": flags},
                     {"": "torch CPU capability", "value": f"{machine_info['torch_capability']} (torch {machine_info['torch']})"},
                     {"": "GPU", "value": machine_info["gpu"]},
                     {"": "cores / OMP threads", "value": f"{machine_info['cores']} / {machine_info['omp_threads']}"},
                     {"": "load average (1, 5, 15 min)", "value": " ".join(map(str, machine_info["load_average"]))}]),
             "",
             _table([{"benchmark": name, "goal": (e.get("result") or {}).get("goal", ""), "verdict": status_of(e),
                      "seconds": round(e["seconds"])} for name, e in entries.items()]),
             ""]
    for name, entry in entries.items():
        lines += _section(name, entry, md_path.parent)
    return "\n".join(lines).rstrip() + "\n"
