"""The code a logged model carries: the modules serving needs, copied under a package name of their own.

A model that shipped the top-level package `ops` clashed with any host application that has its own `ops`
(`No module named 'ops.model.device'`), and where this project is installed it silently ran the installed code
instead of the code it was logged with. So the modules `serving/pyfunc_model.py` needs (its imports, followed
transitively by the same rule that derives code versions, ops/core/code_version.py) are copied, with their
folders and `__init__.py` files, into a package named after their content, `qlora_model_<hash>`, and a
generated two-line stub (MLflow's "models from code") imports the model class from there.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.code_version import PACKAGE_DIR, module_closure, source_digest

PACKAGE_PREFIX = "qlora_model_"
ENTRY = Path("serving") / "pyfunc_model.py"
HASH_CHARS = 12  # 48 bits: distinct code gets a distinct name; equal code may share one, harmlessly
STUB = '''"""Generated when the model was logged: serve with the code logged beside this file (package {package})."""
import mlflow
from {package}.serving.pyfunc_model import AdapterGenerator

mlflow.models.set_model(AdapterGenerator())
'''


def refuse_absolute_imports(path: Path, package_name: str) -> None:
    """Check that the module at `path` imports its package's modules relatively only.

    Args:
        path: a Python file.
        package_name: the package's top-level name (`ops`).
    Raises:
        ValueError: the module imports the package by its absolute name (`ops.x`), which would not travel
            under another package name; the message names the file, the line and the import.
    """
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        absolute = [n for n in names if n.split(".")[0] == package_name]
        if absolute:
            raise ValueError(f"{Path(path).name}, line {node.lineno}: imports {absolute[0]!r} by its absolute "
                             "name; serving code must import its siblings relatively (from ..x import y)")


def serving_files(package_dir: Path = PACKAGE_DIR, entry: Path = ENTRY) -> list[Path]:
    """The files `entry` needs, itself and the packages' `__init__.py` included, relative to `package_dir`, sorted.

    Raises:
        ValueError: one of them imports the package by its absolute name (see `refuse_absolute_imports`).
    """
    package_dir = Path(package_dir).resolve()
    files = module_closure([package_dir / entry], package_dir)
    for path in files:
        refuse_absolute_imports(path, package_dir.name)
    return [path.relative_to(package_dir) for path in files]


def package_serving_code(dest: Path, package_dir: Path = PACKAGE_DIR) -> tuple[Path, Path]:
    """Copy the serving files to `dest/qlora_model_<hash>/` (same folders) and write the stub `dest/model.py`.

    Args:
        dest: an empty or missing folder.
        package_dir: the package to copy from (a copy of `ops/` in tests).
    Returns:
        (the package folder, for `code_paths`; the stub file, for `python_model`). The hash covers the copied
        files' paths and code, by the code version's rule (`source_digest`: the syntax tree without docstrings),
        so a change to what runs gives the package a new name; a reworded comment does not.
    """
    package_dir = Path(package_dir).resolve()
    files = serving_files(package_dir)
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.as_posix().encode() + b"\0" + source_digest(package_dir / rel).encode())
    package = f"{PACKAGE_PREFIX}{digest.hexdigest()[:HASH_CHARS]}"
    target = Path(dest) / package
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package_dir / rel, target / rel)
    (target / "__init__.py").write_text(f'"""Serving code of a logged QLoRA model, copied from {package_dir.name}/."""\n')
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
