"""The logged pyfunc model: base, adapter, the adapter's checksums and its own copy of the serving code.

MLflow 3 registers *logged models* (`models:/<model_id>`), not plain run artifacts, so the adapter is logged
as the pyfunc model in ops/serving/pyfunc_model.py, with the serving code copied under a package name of its
own (ops/serving/packaging.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow

from ..core.fingerprint import file_checksums
from ..model.base_resolution import looks_like_path
from ..serving import pyfunc_model
from ..serving.packaging import importable, package_serving_code

MODEL_ARTIFACT = "model"


class ServingCheck(logging.Handler):
    """Collects MLflow's warning that the logged model failed to predict on its input example."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Failed to validate serving input" in record.getMessage():
            self.failures.append(record.getMessage())


def log_adapter_model(adapter_dir: Path, base_model_dir: Path, prompt_format: str, hub_base: dict | None = None,
                      system_message: str | None = None):
    """Log the pyfunc model (base, adapter, checksums, serving code) under the active run.

    With `hub_base` ({"base_model_id", "base_model_revision"}) the 4-bit base is not copied: the model records
    the hub id, revision and quantization config, and loading quantizes the hub checkpoint the same way.
    `system_message` (chat data whose rows all had it) becomes serving's default system message.
    Returns:
        (MLflow's ModelInfo, the sha256 of the adapter checksums file the model verifies at load).
    """
    # MLflow loads the logged model and predicts on the input example, but only warns when that fails;
    # a model that cannot serve must not be registered, so the warning becomes an error here.
    check, mlflow_logger = ServingCheck(), logging.getLogger("mlflow.models.model")
    mlflow_logger.addHandler(check)
    try:
        info, digest = _log_pyfunc(adapter_dir, base_model_dir, prompt_format, hub_base, system_message)
    finally:
        mlflow_logger.removeHandler(check)
    if check.failures:
        raise RuntimeError(f"the logged model {info.model_uri} failed to predict on its input example: "
                           f"{check.failures[0][-2000:]}")
    return info, digest


def hub_base_config(tags: dict[str, str], base_model_dir: Path) -> dict | None:
    """Hub id, revision and bnb config for a model that loads its base from the hub; None for local bases."""
    model_id = tags.get("base_model_id", "")
    if not model_id or model_id.startswith("embedded:") or looks_like_path(model_id):
        return None
    quantization = json.loads((Path(base_model_dir) / "config.json").read_text())["quantization_config"]
    return {"base_model_id": model_id, "base_model_revision": tags.get("base_model_revision") or "main",
            "quantization_config": quantization}


def _log_pyfunc(adapter_dir: Path, base_model_dir: Path, prompt_format: str, hub_base: dict | None,
                system_message: str | None):
    with tempfile.TemporaryDirectory(prefix="qlora-model-") as tmp:
        package, stub = package_serving_code(Path(tmp) / "code")
        checksums = Path(tmp) / f"{pyfunc_model.CHECKSUMS_ARTIFACT}.json"
        checksums.write_text(json.dumps(file_checksums(Path(adapter_dir)), indent=2, sort_keys=True) + "\n")
        mlflow.log_artifact(str(checksums))  # the run's record of what was registered
        artifacts = {"adapter": str(adapter_dir), pyfunc_model.CHECKSUMS_ARTIFACT: str(checksums)}
        if not hub_base:
            artifacts["base_model"] = str(base_model_dir)
        digest = pyfunc_model.checksums_digest(checksums)
        # MLflow also logs every model_config key as a run param, so the config holds the checksums' digest
        # (verified at load together with the file), not the checksums themselves.
        config = {"prompt_format": prompt_format, pyfunc_model.CHECKSUMS_DIGEST_KEY: digest,
                  **({"system_message": system_message} if system_message is not None else {}), **(hub_base or {})}
        with importable(package):  # MLflow runs the stub at log time
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(stub),
                code_paths=[str(package)],
                artifacts=artifacts,
                model_config=config,
                signature=pyfunc_model.signature(),
                input_example=pyfunc_model.input_example(prompt_format),
                pip_requirements=pyfunc_model.pip_requirements(),
            )
    return info, digest
