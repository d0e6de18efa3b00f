"""The code a logged model carries: the modules serving needs, copied under a package name of their own.

A model that shipped the top-level package `ops` clashed with any host application that has its own `ops`
(`No module named 'ops.device'`), and where this project is installed it silently ran the installed code
instead of the code it was logged with. So the modules `pyfunc_model` needs (its relative imports, followed
transitively) are copied into a package named after their content, `qlora_model_<hash>`, and a generated
two-line stub (MLflow's "models from code") imports the model class from there.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_PREFIX = "qlora_model_"
ENTRY = "pyfunc_model"
HASH_CHARS = 12  # 48 bits: distinct code gets a distinct name; equal code may share one, harmlessly
STUB = '''"""Generated when the model was logged: serve with the code logged beside this file (package {package})."""
import mlflow
from {package}.pyfunc_model import AdapterGenerator

mlflow.models.set_model(AdapterGenerator())
'''


def relative_imports(path: Path) -> set[str]:
    """Top-level names inside the package that the module at `path` imports, anywhere in the file.

    Raises:
        ValueError: the module imports the package by its absolute name (`ops.x`), which would not travel.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and node.level > 1:
            raise ValueError(f"{path.name}, line {node.lineno}: imports from outside its package")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            absolute = [n for n in names if n.split(".")[0] == PACKAGE_DIR.name]
            if absolute:
                raise ValueError(f"{path.name}, line {node.lineno}: imports {absolute[0]!r} by its absolute "
                                 "name; serving code must import its siblings relatively (from .x import y)")
    return found


def serving_modules(package_dir: Path = PACKAGE_DIR, entry: str = ENTRY) -> list[str]:
    """Names of the modules (`<name>.py`) `entry` needs, itself included, sorted.

    Raises:
        FileNotFoundError: an import names no module file of the package (a subpackage is not copied).
    """
    todo, seen = [entry], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = package_dir / f"{name}.py"
        if not path.is_file():
            raise FileNotFoundError(f"serving code imports {name!r}, which is no module file in {package_dir}")
        todo.extend(relative_imports(path))
    return sorted(seen)


def package_serving_code(dest: Path, package_dir: Path = PACKAGE_DIR) -> tuple[Path, Path]:
    """Copy the serving modules to `dest/qlora_model_<hash>/` and write the stub `dest/model.py`.

    Returns:
        (the package folder, for `code_paths`; the stub file, for `python_model`). The hash covers the
        copied files' names and bytes, so a change in any of them gives the package a new name.
    """
    names = serving_modules(package_dir)
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (package_dir / f"{name}.py").read_bytes())
    package = f"{PACKAGE_PREFIX}{digest.hexdigest()[:HASH_CHARS]}"
    target = Path(dest) / package
    target.mkdir(parents=True)
    (target / "__init__.py").write_text(f'"""Serving code of a logged QLoRA model, copied from {package_dir.name}/."""\n')
    for name in names:
        shutil.copy2(package_dir / f"{name}.py", target / f"{name}.py")
    stub = Path(dest) / "model.py"
    stub.write_text(STUB.format(package=package))
    return target, stub


@contextmanager
def importable(package_dir: Path) -> Iterator[None]:
    """Make the copied package importable while MLflow runs the stub at log time, then forget it again,
    so that a later load in this process imports the copy inside the model, not this temporary one."""
    parent, name = str(Path(package_dir).parent), Path(package_dir).name
    sys.path.insert(0, parent)
    try:
        yield
    finally:
        if parent in sys.path:
            sys.path.remove(parent)
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]
