"""Code versions: the import graph they follow, what counts as a change, library versions, the assets' versions."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

import ops.core.code_version as cv
from ops.core.code_version import (
    PACKAGE_DIR,
    asset_code_version,
    code_version,
    library_versions,
    module_closure,
    project_imports,
)
from ops.core.paths import REPO_ROOT
from ops.evaluation.report import METRICS_DIR
from ops.model.embedded import builder_version

# A package with every kind of import the project uses: relative (one and two dots), `from . import module`,
# absolute by the package's name, an import inside a function, and a module nobody imports.
PACKAGE = {
    "__init__.py": '"""The package."""\n',
    "a.py": "from .b import helper\nimport json\n",
    "b.py": "def helper():\n    from . import c\n    return c.VALUE\n",
    "c.py": "VALUE = 1\n",
    "d.py": "VALUE = 2\n",
    "unused.py": "VALUE = 3\n",
    "sub/__init__.py": "",
    "sub/e.py": "from ..a import helper\nimport pkg.d\nfrom pkg import missing_name\n",
}


def make_package(root: Path, files: dict[str, str] = PACKAGE) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def names(paths, package: Path) -> set[str]:
    return {str(Path(p).relative_to(package)) for p in paths}


def test_closure_follows_relative_absolute_and_function_level_imports(tmp_path):
    pkg = make_package(tmp_path)
    assert names(project_imports(pkg / "a.py", pkg), pkg) == {"__init__.py", "b.py"}
    assert names(project_imports(pkg / "b.py", pkg), pkg) == {"__init__.py", "c.py"}  # `from . import c`, lazily
    assert names(module_closure([pkg / "a.py"], pkg), pkg) == {"__init__.py", "a.py", "b.py", "c.py"}
    assert names(module_closure([pkg / "sub" / "e.py"], pkg), pkg) == {
        "__init__.py", "sub/__init__.py", "sub/e.py", "a.py", "b.py", "c.py", "d.py"}


def test_a_module_outside_the_package_is_read_for_its_imports_of_the_package(tmp_path):
    pkg = make_package(tmp_path)
    asset = tmp_path / "asset.py"
    asset.write_text("import json\nfrom pkg.sub.e import helper\nfrom other.pkg import thing\n")
    assert names(project_imports(asset, pkg), pkg) == {"__init__.py", "sub/__init__.py", "sub/e.py"}


def test_version_changes_with_an_imported_module_and_not_with_an_unrelated_one(tmp_path):
    pkg = make_package(tmp_path)
    before = code_version([pkg / "a.py"], package_dir=pkg)
    (pkg / "unused.py").write_text("VALUE = 4\n")
    assert code_version([pkg / "a.py"], package_dir=pkg) == before
    (pkg / "c.py").write_text("VALUE = 5\n")  # imported two levels down, inside a function
    assert code_version([pkg / "a.py"], package_dir=pkg) != before


def test_comments_formatting_and_docstrings_do_not_count_code_and_strings_do(tmp_path):
    pkg = make_package(tmp_path, {"__init__.py": "", "m.py": (
        '"""Module doc."""\n\nTEMPLATE = "### Response:"\n\n\ndef f(x):\n    """Doc."""\n    return x + 1\n')})
    before = code_version([pkg / "m.py"], package_dir=pkg)

    def version_of(text: str) -> str:
        (pkg / "m.py").write_text(text)
        return code_version([pkg / "m.py"], package_dir=pkg)

    assert version_of('"""Other words."""\n# a comment\nTEMPLATE = ("### Response:")\n'
                      'def f(x):  # why\n    """Changed doc."""\n\n    return (x +\n            1)\n') == before
    assert version_of('"""Module doc."""\nTEMPLATE = "### Answer:"\ndef f(x):\n    return x + 1\n') != before
    assert version_of('"""Module doc."""\nTEMPLATE = "### Response:"\ndef f(x):\n    return x + 2\n') != before
    # a body that was only a docstring is left as `pass`, which is what it does
    assert version_of('def g():\n    """Only a doc."""\n') == version_of("def g():\n    pass  # nothing\n")


def test_files_loaded_by_path_count_byte_for_byte_and_caches_do_not(tmp_path):
    pkg = make_package(tmp_path)
    metrics = tmp_path / "metrics"
    (metrics / "m").mkdir(parents=True)
    (metrics / "m" / "m.py").write_text("import datasets\n\nimport evaluate\nSCALE = 1\n")
    before = code_version([pkg / "a.py"], files=[metrics], package_dir=pkg)
    (metrics / "m" / "__pycache__").mkdir()
    (metrics / "m" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0compiled")
    assert code_version([pkg / "a.py"], files=[metrics], package_dir=pkg) == before
    (metrics / "m" / "m.py").write_text("import datasets\n\nimport evaluate\nSCALE = 2\n")
    assert code_version([pkg / "a.py"], files=[metrics], package_dir=pkg) != before


def test_library_versions_are_read_from_metadata_and_count(tmp_path, monkeypatch):
    import torch

    assert library_versions(["torch", "no-such-distribution-xyz"]) == {
        "torch": torch.__version__, "no-such-distribution-xyz": "absent"}  # the local label (+cpu) included
    pkg = make_package(tmp_path)
    before = code_version([pkg / "a.py"], ["torch"], package_dir=pkg)
    assert code_version([pkg / "a.py"], package_dir=pkg) != before  # naming a library counts
    monkeypatch.setattr(cv, "installed_version", lambda name: "9.9.9" if name == "torch" else version(name))
    assert code_version([pkg / "a.py"], ["torch"], package_dir=pkg) != before  # another torch, another version


def test_a_copy_elsewhere_has_the_same_version(tmp_path):
    pkg = make_package(tmp_path / "one")
    copy = shutil.copytree(pkg, tmp_path / "two" / "pkg")
    assert code_version([pkg / "a.py"], ["torch"], package_dir=pkg) == code_version(
        [copy / "a.py"], ["torch"], package_dir=copy)


def test_bad_inputs_are_named(tmp_path):
    pkg = make_package(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cannot derive a code version: .*nope\.py does not exist"):
        code_version([pkg / "nope.py"], package_dir=pkg)
    (pkg / "broken.py").write_text("def f(:\n")
    with pytest.raises(ValueError, match=r"broken\.py is not valid Python \(.*line 1\)"):
        code_version([pkg / "broken.py"], package_dir=pkg)
    with pytest.raises(ValueError, match=r"module .*outside\.py is not in the package"):
        (tmp_path / "outside.py").write_text("")
        code_version([tmp_path / "outside.py"], package_dir=pkg)
    (tmp_path / "lonely.py").write_text("import json\n")
    with pytest.raises(ValueError, match=r"lonely\.py imports nothing from pkg"):
        asset_code_version(tmp_path / "lonely.py", package_dir=pkg)


def closure_of(asset: str) -> set[str]:
    return names(module_closure(project_imports(REPO_ROOT / "assets" / f"{asset}.py")), PACKAGE_DIR)


def test_each_asset_runs_the_modules_its_versions_promise():
    dataset, base, adapter, evaluation, registry = map(closure_of, ["dataset", "base_model", "adapter",
                                                                    "evaluation", "registry"])
    assert {"data/prompt_formats.py", "data/preparation.py", "data/sources.py", "data/tokens.py"} <= dataset
    assert {"model/quantize.py", "model/base_resolution.py", "model/embedded.py"} <= base
    assert "data/prompt_formats.py" not in base
    assert {"train/trainer.py", "train/callbacks.py"} <= adapter
    assert {"evaluation/evaluator.py", "model/generation.py"} <= evaluation
    assert {"registry/register.py", "serving/pyfunc_model.py", "data/prompt_formats.py", "registry/champion.py"} <= registry
    # evaluation code is run by the evaluation alone (registration follows through its input's fingerprint)
    assert all("evaluation/evaluator.py" not in c for c in (dataset, base, adapter, registry))
    # the embedded base's tokenizer does not follow the prompt format: a pretrained model's would not either
    assert "data/prompt_formats.py" not in names(module_closure([PACKAGE_DIR / "model" / "embedded.py"]), PACKAGE_DIR)
    # the versioning code is no step's code: refactoring it must not retrain anything
    assert all("core/code_version.py" not in c for c in (dataset, base, adapter, evaluation, registry))


def test_assets_carry_derived_code_versions_in_dagster():
    import assets.evaluation
    from assets import PIPELINE_ASSETS

    versions = {}
    for asset in PIPELINE_ASSETS:
        (key, value), = asset.code_versions_by_key.items()
        versions[key.to_user_string()] = value
    assert len(set(versions.values())) == 5 and all(len(v) == 16 and v != "1" for v in versions.values())
    assert versions["adapter_evaluation"] == assets.evaluation.CODE_VERSION == asset_code_version(
        assets.evaluation.__file__, ("bitsandbytes", "datasets", "evaluate", "peft", "torch", "transformers"),
        files=[METRICS_DIR])


def test_the_evaluation_version_follows_the_metric_modules(tmp_path):
    package = shutil.copytree(PACKAGE_DIR, tmp_path / "ops", ignore=shutil.ignore_patterns("__pycache__"))
    asset = shutil.copy(REPO_ROOT / "assets" / "evaluation.py", tmp_path / "evaluation_asset.py")

    def version_now() -> str:
        return asset_code_version(asset, ("evaluate",), files=[package / "evaluation" / "metrics"], package_dir=package)

    before = version_now()
    rouge = package / "evaluation" / "metrics" / "rouge_l" / "rouge_l.py"
    rouge.write_text(rouge.read_text() + "\nEDITED = True\n")
    assert version_now() != before


def test_the_embedded_base_folder_is_named_by_its_builder_code(qlora_home):
    from ops.model.base_resolution import embedded_base_dir

    version = builder_version()
    assert len(version) == 16 and embedded_base_dir().name.startswith(f"tiny-llama-{version}-")
