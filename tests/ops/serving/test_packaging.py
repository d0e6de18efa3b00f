"""The logged model carries its own serving code under a package name of its own, and runs that code anywhere.

The load tests run in fresh processes outside the repository: one in a host application that has its own
`ops` package, one where this project's `ops` is importable but its generation code is broken.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from ops.core.fingerprint import ChecksumMismatch, file_checksums
from ops.registry.register import mlflow_uris, register_adapter
from ops.registry.spec import RegistrySpec
from ops.serving.packaging import PACKAGE_DIR, package_serving_code, refuse_absolute_imports, serving_files
from ops.serving.pyfunc_model import CHECKSUMS_ARTIFACT, CHECKSUMS_DIGEST_KEY, checksums_digest, verify_adapter
from tests.tiny import write_tiny_report

REQUEST = [{"instruction": "Give the first word.", "input": "quick brown fox"}]
LOAD = """
import json, sys, mlflow
{before}
model = mlflow.pyfunc.load_model(sys.argv[1])
inner = model.unwrap_python_model()
out = model.predict({request!r}, params={{"max_new_tokens": 3}})
code = sys.modules[type(inner).__module__]
used = [code.__file__] + [sys.modules[getattr(code, f).__module__].__file__
                          for f in ("generate", "render_request", "load_adapter_model", "resolve_device")]
print(json.dumps({{"out": list(out), "code_files": used, "ops_file": getattr(sys.modules.get("ops"), "__file__", None)}}))
"""


def test_serving_code_is_the_import_closure_of_the_model_module():
    names = {path.as_posix() for path in serving_files()}
    assert {"serving/pyfunc_model.py", "model/generation.py", "data/tokens.py", "data/prompt_formats.py",
            "model/loading.py", "model/device.py", "core/fingerprint.py", "__init__.py", "model/__init__.py"} <= names
    assert not {"train", "registry", "evaluation"} & {path.split("/")[0] for path in names}
    assert not {"data/preparation.py", "core/store.py", "model/quantize.py"} & names


def test_an_absolute_import_of_the_package_is_refused(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("from ..data.tokens import with_bos\n\ndef f():\n    from ops.model.generation import generate\n")
    with pytest.raises(ValueError, match="bad.py, line 4: imports 'ops.model.generation' by its absolute name"):
        refuse_absolute_imports(module, "ops")


def test_the_package_name_follows_the_code(tmp_path):
    source = tmp_path / "ops"
    shutil.copytree(PACKAGE_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    first, stub = package_serving_code(tmp_path / "a", source)
    assert first.name.startswith("qlora_model_") and f"from {first.name}.serving.pyfunc_model import" in stub.read_text()
    assert sorted(p.relative_to(first) for p in first.rglob("*.py")) == serving_files(source)
    assert package_serving_code(tmp_path / "b", source)[0].name == first.name
    with (source / "model" / "generation.py").open("a") as f:
        f.write("\n# a comment runs nothing\n")
    assert package_serving_code(tmp_path / "c", source)[0].name == first.name
    with (source / "model" / "generation.py").open("a") as f:
        f.write("\nCHANGED = True\n")
    assert package_serving_code(tmp_path / "d", source)[0].name != first.name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_quantized, tiny_adapter) -> Path:
    """A registered tiny alpaca model, downloaded to a local folder."""
    root = tmp_path_factory.mktemp("model-code")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    report = root / "report.json"
    write_tiny_report(report)
    info = register_adapter(tracking_uri=uri, registry_uri=None, artifact_location=str(root / "artifacts"),
                            experiment="model-code", spec=RegistrySpec(model_name="own-code"),
                            adapter_dir=tiny_adapter[0] / "adapter", base_model_dir=tiny_quantized[0] / "model",
                            prompt_format="alpaca", params={}, metrics={}, report_path=report, tags={},
                            log=lambda _: None)
    with mlflow_uris(uri, uri):
        return Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model")))


def load_in_fresh_process(model_dir: Path, cwd: Path, before: str = "", pythonpath: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run([sys.executable, "-c", LOAD.format(before=before, request=REQUEST), str(model_dir)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_runs_its_own_code(result: dict, model_dir: Path) -> None:
    """The model class and the functions it generates with come from files inside the model's folder."""
    outside = [f for f in result["code_files"] if not Path(f).resolve().is_relative_to(model_dir.resolve())]
    assert not outside, outside
    assert len(result["out"]) == 1 and isinstance(result["out"][0], str)


@pytest.mark.slow  # starts a subprocess
def test_loads_beside_a_host_application_with_its_own_ops_package(model_dir, tmp_path):
    host = tmp_path / "host"
    (host / "ops").mkdir(parents=True)
    (host / "ops" / "__init__.py").write_text('OWNER = "host"\n')
    result = load_in_fresh_process(model_dir, cwd=host, before='import ops; assert ops.OWNER == "host"',
                                   pythonpath=host)
    assert_runs_its_own_code(result, model_dir)
    assert Path(result["ops_file"]).resolve() == (host / "ops" / "__init__.py").resolve()


@pytest.mark.slow  # starts a subprocess
def test_runs_its_logged_code_not_an_importable_project_copy(model_dir, tmp_path):
    """The project's `ops` imported first (as `qlora generate` does), with generation broken: the model must
    still generate with the code it was logged with."""
    project = tmp_path / "project"
    shutil.copytree(PACKAGE_DIR, project / "ops", ignore=shutil.ignore_patterns("__pycache__"))
    with (project / "ops" / "model" / "generation.py").open("a") as f:
        f.write("\n\ndef generate(*args, **kwargs):\n    raise RuntimeError('the working tree generation ran')\n")
    result = load_in_fresh_process(model_dir, cwd=tmp_path, before="import ops.model.generation", pythonpath=project)
    assert Path(result["ops_file"]).resolve().is_relative_to(project.resolve())
    assert_runs_its_own_code(result, model_dir)


def test_load_refuses_adapter_files_or_a_checksums_file_changed_after_registration(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    checksums = tmp_path / "adapter_checksums.json"
    checksums.write_text(json.dumps(file_checksums(adapter), sort_keys=True))
    artifacts = {"adapter": str(adapter), CHECKSUMS_ARTIFACT: str(checksums)}
    config = {CHECKSUMS_DIGEST_KEY: checksums_digest(checksums)}
    verify_adapter(artifacts, config)
    (adapter / "adapter_model.safetensors").write_bytes(b"weightz")
    with pytest.raises(ChecksumMismatch, match=r"adapter_model.safetensors \(changed or missing\)"):
        verify_adapter(artifacts, config)
    checksums.write_text(json.dumps(file_checksums(adapter), sort_keys=True))  # the tamperer updates the list too
    with pytest.raises(ChecksumMismatch, match="does not match the digest in the model config"):
        verify_adapter(artifacts, config)
