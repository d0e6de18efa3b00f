"""Run the benchmarks, each in its own subprocess with a time limit; write results.json and BENCHMARKS.md.

    python -m benchmarks                 # every benchmarks/<name>.py that defines run()
    python -m benchmarks memory packing  # a subset; the other entries of results.json are kept
    python -m benchmarks --list

A benchmark that raises, times out or returns something that is not the convention's dict is reported as such
in BENCHMARKS.md; the harness itself goes on with the next one.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._report import machine, markdown, status_of

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
KEYS = {"name": str, "title": str, "goal": str, "figures": dict, "table": list, "notes": str, "plots": list}
DEFAULT_TIMEOUT_S = 480  # each benchmark is meant to take under ~3 minutes; more than twice that is a hang


def discover(bench_dir: Path) -> dict[str, Path]:
    """`{name: path}` of the modules in `bench_dir` that define a top-level `run` (read with ast, not imported)."""
    found = {}
    for path in sorted(bench_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body):
            found[path.stem] = path
    return found


def check_result(result) -> str | None:
    """None when `result` follows the convention, else one line naming what is wrong."""
    if not isinstance(result, dict):
        return f"run() returned {type(result).__name__}, not a dict"
    for key, kind in KEYS.items():
        if not isinstance(result.get(key), kind):
            return f"run() result's {key!r} is {type(result.get(key)).__name__}, expected {kind.__name__}"
    if result.get("met") not in (True, False, None):
        return f"run() result's 'met' is {result.get('met')!r}, expected true, false or null"
    bad = [k for k, v in result["figures"].items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        return f"run() result's figures {bad} are not numbers"
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the benchmark and every process it started (it runs in a session of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_one(name: str, path: Path, timeout_s: float, threads: int, plots_dir: Path) -> dict:
    """Run one benchmark in a subprocess; return its entry for results.json (status, result or error, timings)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = f"python -m benchmarks {name}" if path.parent == PACKAGE_DIR else f"python -m benchmarks --dir {path.parent} {name}"
    entry = {"command": command, "commit": "", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "load_before": round(os.getloadavg()[0], 2)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "output.log"
        with log.open("w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks._runner", str(path), str(out)], cwd=ROOT,
                                    env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        entry["load_after"] = round(os.getloadavg()[0], 2)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        payload = json.loads(out.read_text()) if out.exists() else None
    if payload is None:
        return {**entry, "status": "timed_out" if timed_out else "failed", "result": None, "output_tail": tail,
                "error": f"no result after {timeout_s:.0f} s (time limit)" if timed_out
                else f"the benchmark process exited with code {proc.returncode} before writing a result"}
    if not payload["ok"]:
        return {**entry, "status": "failed", "result": None, "error": payload["error"],
                "output_tail": payload["traceback"]}
    result = payload["result"]
    problem = check_result(result)
    if problem:
        return {**entry, "status": "bad_result", "result": None, "error": problem, "output_tail": tail}
    plots = collect_plots(name, result["plots"], plots_dir)
    # the result keeps the copies too: the paths it was given lie in a temporary folder that is gone by now
    return {**entry, "status": "ok", "result": {**result, "plots": plots}, "plots": plots}


def collect_plots(name: str, plots: list[str], plots_dir: Path) -> list[str]:
    """Copy each PNG the benchmark wrote into `plots_dir/<name>/` (beside the report); return the copies' paths,
    relative to the repository when inside it (results.json then holds no machine's absolute paths)."""
    kept = []
    for plot in map(Path, plots):
        if plot.suffix.lower() != ".png" or not plot.is_file():
            continue
        target = plots_dir / name / plot.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if plot.resolve() != target.resolve():
            shutil.copyfile(plot, target)
        kept.append(os.path.relpath(target, ROOT) if target.resolve().is_relative_to(ROOT.resolve()) else str(target))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--dir", type=Path, default=PACKAGE_DIR, help="folder of benchmark modules")
    parser.add_argument("--json", type=Path, default=PACKAGE_DIR / "results.json", help="results file (merged)")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md", help="report to write")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds allowed per benchmark")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each benchmark (default: cores)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks found and exit")
    args = parser.parse_args(argv)
    found = discover(args.dir)
    if args.list:
        print("\n".join(found))
        return 0
    unknown = [n for n in args.names if n not in found]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)} in {args.dir} (found: {', '.join(found) or 'none'})")
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    info = machine(ROOT, threads)
    previous = json.loads(args.json.read_text()).get("benchmarks", {}) if args.json.exists() else {}
    entries = {name: e for name, e in previous.items() if name in found}  # drop results of deleted benchmarks
    for name in args.names or list(found):
        print(f"[bench] {name} ...", flush=True)
        entry = run_one(name, found[name], args.timeout, threads, args.json.parent / "plots")
        entry["commit"], entry["threads"] = info["commit"], threads
        entries[name] = entry
        print(f"[bench] {name}: {status_of(entry)} in {entry['seconds']:.0f} s"
              + (f" ({entry['error']})" if entry["status"] != "ok" else ""), flush=True)
    entries = {name: entries[name] for name in found if name in entries}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": info, "benchmarks": entries}, indent=2) + "\n")
    args.markdown.write_text(markdown(info, entries, args.markdown))
    print(f"[bench] wrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
