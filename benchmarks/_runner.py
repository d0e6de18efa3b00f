"""Run one benchmark module's `run()` in this process and write its result as JSON (the harness's subprocess).

    python -m benchmarks._runner PATH_TO_MODULE.py OUT.json

A module inside the repository's benchmarks/ folder is imported as `benchmarks.<name>` (so it can import the
project and the helpers beside it); any other file is loaded from its path. The result, or the exception's
one-line text and traceback, goes to OUT.json, so nothing the benchmark prints on stdout can garble it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def load(path: Path):
    """The module at `path`: `benchmarks.<stem>` when it lies in this package, else loaded from the file."""
    path = path.resolve()
    if path.parent == PACKAGE_DIR:
        return importlib.import_module(f"benchmarks.{path.stem}")
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks._runner MODULE.py OUT.json", file=sys.stderr)
        return 2
    path, out = Path(argv[0]), Path(argv[1])
    sys.path.insert(0, str(PACKAGE_DIR.parent))  # the repository root: `import ops` and `import benchmarks`
    try:
        result = load(path).run()
        text = json.dumps({"ok": True, "result": result}, default=str)
    except BaseException as exc:  # noqa: BLE001 -- any failure is the benchmark's result, reported, not raised
        text = json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                           "traceback": traceback.format_exc()[-4000:]})
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
