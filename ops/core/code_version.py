"""Code versions derived from the code itself: a hash of the source a step runs, never a hand-bumped string.

An asset's code version hashes, for every module of this package that the asset's ops import (followed
transitively through relative and absolute imports, parsed with `ast`, nothing imported), the module's
syntax tree with docstrings removed; plus the files an op loads by path (the metric modules), the versions
of the libraries that decide the artifact's bytes, and the Python minor version. It names cached artifacts
(through the fingerprint) and is the asset's Dagster `code_version`, so the UI's stale marks follow it too.
The idea is dagster-dbt's: a model's code version is the hash of its SQL.

Why the syntax tree and not the bytes: comments, blank lines, formatting and docstrings do not change
what runs, and recomputing a day of training for a reworded comment would teach people to switch the cache
off. The tree's text (`ast.dump`) differs between Python minor versions, hence the version in the hash.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from collections.abc import Iterable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .fingerprint import FINGERPRINT_LEN

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # ops/
THIS_MODULE = Path(__file__).resolve().relative_to(PACKAGE_DIR)  # core/code_version.py
_HAS_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@lru_cache(maxsize=512)
def _parse(source: bytes, name: str) -> tuple[str, tuple[tuple[int, str, tuple[str, ...]], ...]]:
    """(digest of the docstring-free tree, imports as (level, module, names)) of one Python source."""
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as err:
        raise ValueError(f"cannot derive a code version: {name} is not valid Python "
                         f"({err.msg}, line {err.lineno})") from None
    imports = []
    for node in ast.walk(tree):  # walks function bodies too: lazy imports count
        if isinstance(node, ast.Import):
            imports += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
        elif isinstance(node, _HAS_DOCSTRING) and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]  # a docstring does not run; a body of only one does nothing
    dump = ast.dump(tree, annotate_fields=True, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest(), tuple(imports)


def source_digest(path: Path) -> str:
    """sha256 of a file's content as it runs: the docstring-free syntax tree of a .py file, else the bytes.

    Args:
        path: the file.
    Returns:
        64 hex characters.
    Raises:
        ValueError: a .py file that does not parse (named, with the line).
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".py":
        return _parse(data, str(path))[0]
    return hashlib.sha256(data).hexdigest()


def _module_file(parts: list[str], package_dir: Path) -> Path | None:
    """The file of module `parts` (relative to the package root), or None when no such module exists."""
    target = package_dir.joinpath(*parts)
    if target.with_suffix(".py").is_file() and parts:
        return target.with_suffix(".py")
    if (target / "__init__.py").is_file():
        return target / "__init__.py"
    return None


def _with_parents(parts: list[str], package_dir: Path) -> list[Path]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c: every file that exists on the way."""
    files = [_module_file(parts[:i], package_dir) for i in range(len(parts) + 1)]
    return [f for f in files if f is not None]


def project_imports(path: Path, package_dir: Path = PACKAGE_DIR) -> set[Path]:
    """The files of this package that one module imports: `from .x import y`, `from . import x`,
    `import <package>.x` and `from <package>.x import y` (the package under its directory's name), at any
    depth in the module (function-level imports count). Other packages are not followed.

    Args:
        path: a Python file, inside `package_dir` or not (an asset module imports the package by name).
        package_dir: the package's directory.
    Returns:
        absolute paths of the imported modules' files, with the packages' `__init__.py` on the way.
    """
    path, package_dir = Path(path).resolve(), Path(package_dir).resolve()
    inside = path.is_relative_to(package_dir)
    # The importing module's package, relative to the package root: ops/x.py -> [], ops/a/b.py -> [a].
    here = list(path.relative_to(package_dir).parent.parts) if inside else None
    found: set[Path] = set()
    for level, module, names in _parse(path.read_bytes(), str(path))[1]:
        parts = module.split(".") if module else []
        if level:
            if here is None or level - 1 > len(here):
                continue  # a relative import outside this package
            parts = here[: len(here) - (level - 1)] + parts
        elif parts and parts[0] == package_dir.name:
            parts = parts[1:]
        else:
            continue  # another package
        found.update(_with_parents(parts, package_dir))
        for name in names:  # `from . import x` names a module, `from .x import y` usually a value
            sub = _module_file(parts + [name], package_dir) if name != "*" else None
            if sub is not None:
                found.add(sub)
    return found


def module_closure(files: Iterable[Path], package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """`files`, the `__init__.py` of the packages they sit in, and every package module they import,
    transitively, sorted. This module is left out: it versions a step's code and is no part of it (when it
    changes what it hashes, the versions change anyway; when it is only refactored, nothing should rerun)."""
    package_dir = Path(package_dir).resolve()
    todo = [Path(f).resolve() for f in files]
    seen: set[Path] = {package_dir / THIS_MODULE}
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        found = project_imports(current, package_dir)
        if current.is_relative_to(package_dir):  # running a/b.py runs a/__init__.py first
            found.update(_with_parents(list(current.relative_to(package_dir).parent.parts), package_dir))
        todo += sorted(found - seen)
    return sorted(seen - {package_dir / THIS_MODULE})


@lru_cache(maxsize=None)
def installed_version(name: str) -> str:
    """A distribution's installed version, or 'absent'. Cached: a process keeps the libraries it imported
    first, whatever is installed later."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed distribution versions, local build label included (2.13.0+cpu is not 2.13.0+cu128);
    'absent' for one not installed. Read from package metadata: nothing is imported."""
    return {name: installed_version(name) for name in sorted(set(names))}


def code_version(modules: Iterable[Path], libraries: Iterable[str] = (), files: Iterable[Path] = (),
                 package_dir: Path = PACKAGE_DIR) -> str:
    """The code version of a step that runs `modules`: their import closure in this package, the extra files
    (a folder counts as every file under it), the library versions and the Python minor version.

    Args:
        modules: the package's Python files the step calls into.
        libraries: distribution names whose versions decide the artifact's bytes.
        files: files or folders loaded by path at run time (the metric modules).
        package_dir: the package whose imports are followed.
    Returns:
        FINGERPRINT_LEN hex characters.
    Raises:
        FileNotFoundError: a module, file or folder that does not exist (named).
        ValueError: a module outside `package_dir`, or one that does not parse.
    """
    package_dir = Path(package_dir).resolve()
    modules, files = [Path(m).resolve() for m in modules], [Path(f).resolve() for f in files]
    for path in [*modules, *files]:
        if not path.exists():
            raise FileNotFoundError(f"cannot derive a code version: {path} does not exist")
    for path in modules:
        if not path.is_relative_to(package_dir):
            raise ValueError(f"cannot derive a code version: module {path} is not in the package {package_dir}")
    extra = sorted({p for f in files for p in ([f] if f.is_file() else f.rglob("*"))
                    if p.is_file() and "__pycache__" not in p.parts})

    def key(path: Path) -> str:  # relative, so a copy of the project elsewhere gets the same version
        return str(path.relative_to(package_dir)) if path.is_relative_to(package_dir) else path.name

    payload = {
        "modules": {key(m): source_digest(m) for m in module_closure(modules, package_dir)},
        "files": {key(f): source_digest(f) for f in extra},
        "libraries": library_versions(libraries),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:FINGERPRINT_LEN]


def asset_code_version(asset_file: Path, libraries: Iterable[str] = (), files: Iterable[Path] = (),
                       package_dir: Path = PACKAGE_DIR) -> str:
    """An asset's code version: `code_version` of the package modules the asset module imports.

    The asset module itself is not hashed: assets are wiring and metadata (no ML logic, see ARCHITECTURE.md),
    and editing what the UI shows should not retrain a model. Its imports are read, so an op it starts
    calling counts without anyone updating a list.

    Args:
        asset_file: the asset's module (`__file__`).
        libraries, files, package_dir: as for `code_version`.
    Returns:
        FINGERPRINT_LEN hex characters.
    Raises:
        ValueError: the asset imports nothing from the package (a version of nothing would never change).
    """
    roots = sorted(project_imports(asset_file, package_dir))
    if not roots:
        raise ValueError(f"cannot derive a code version: {asset_file} imports nothing from {Path(package_dir).name}")
    return code_version(roots, libraries, files, package_dir)
