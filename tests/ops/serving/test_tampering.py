"""A registered adapter whose files change after registration is refused at load time, with a clear error."""

from __future__ import annotations

import mlflow
import pytest

from ops.core.fingerprint import ChecksumMismatch, file_checksums, verify_checksums
from ops.registry.register import mlflow_uris, register_adapter
from ops.registry.spec import RegistrySpec
from tests.tiny import write_tiny_report


def test_verify_checksums_names_changed_and_added_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"weights")
    expected = file_checksums(tmp_path)
    verify_checksums(tmp_path, expected)
    (tmp_path / "a.bin").write_bytes(b"weightz")
    (tmp_path / "extra.py").write_text("print('hi')")
    with pytest.raises(ChecksumMismatch, match=r"a.bin \(changed or missing\), extra.py \(not registered\)"):
        verify_checksums(tmp_path, expected)


@pytest.mark.slow
def test_loading_a_tampered_registered_adapter_fails(tiny_quantized, tiny_adapter, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = tmp_path / "report.json"
    write_tiny_report(report)
    info = register_adapter(
        tracking_uri=uri, registry_uri=None, artifact_location=str(tmp_path / "artifacts"), experiment="tamper",
        spec=RegistrySpec(model_name="tamper"), adapter_dir=tiny_adapter[0] / "adapter",
        base_model_dir=tiny_quantized[0] / "model", prompt_format="alpaca", params={}, metrics={},
        report_path=report, tags={"registration_fingerprint": "tamper-1"}, log=lambda _: None)
    with mlflow_uris(uri, uri):  # earlier tests may have pointed MLflow's globals elsewhere
        assert mlflow.pyfunc.load_model(info.model_uri).predict([{"instruction": "Say hi."}], params={"max_new_tokens": 2})

        weights = next((tmp_path / "artifacts").rglob("adapter/adapter_model.safetensors"))
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        # The model raises its own logged copy of ChecksumMismatch (a ValueError), not this checkout's class.
        with pytest.raises(ValueError, match="adapter_model.safetensors") as raised:
            mlflow.pyfunc.load_model(info.model_uri)
        assert type(raised.value).__name__ == ChecksumMismatch.__name__
