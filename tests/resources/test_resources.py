"""The Dagster resources: device choice, base model, MLflow defaults under the data home, artifact refs between assets."""

from __future__ import annotations

import logging
import shutil

import dagster as dg
import pytest
import torch

from ops.core.store import ArtifactRef, ArtifactStore
from ops.model.base_resolution import BaseModelError
from ops.model.device import NoGPUError
from ops.model.embedded import EMBEDDED_ID
from resources import ArtifactRefIOManager, ArtifactStoreResource, BaseModelResource, GPUResource, MLflowResource

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA GPU")


@no_cuda
def test_gpu_resource_requiring_a_gpu_fails_without_one():
    with pytest.raises(NoGPUError, match="require_gpu"):
        GPUResource(require_gpu=True).device()


@no_cuda
def test_gpu_resource_falls_back_to_the_cpu_and_says_so(caplog):
    log = logging.getLogger("test-gpu-resource")
    with caplog.at_level(logging.WARNING, logger="test-gpu-resource"):
        info = GPUResource().device(log)
    assert info.type == "cpu" and info.compute_dtype in (torch.float32, torch.bfloat16)  # bf16 on AVX512-BF16/AMX CPUs
    assert caplog.messages == [f"no CUDA GPU visible: running on the CPU ({info.name}), compute dtype {info.dtype_reason}"]
    assert info.dtype_reason.startswith(f"{info.dtype_name}: this CPU (")
    assert GPUResource().peak_memory_bytes(info) > 0


def test_mlflow_defaults_to_sqlite_under_the_data_home(qlora_home):
    mlflow = MLflowResource()
    assert mlflow.experiment == "qlora"
    assert mlflow.resolved_tracking_uri() == f"sqlite:///{qlora_home / 'mlflow.db'}"
    assert mlflow.resolved_registry_uri() == mlflow.resolved_tracking_uri()
    assert mlflow.artifact_location is None  # ops.registry.tracking puts artifacts next to the sqlite database


def test_mlflow_server_settings_are_passed_through():
    server = MLflowResource(tracking_uri="http://mlflow:5000", registry_uri="databricks-uc")
    assert server.resolved_tracking_uri() == "http://mlflow:5000"
    assert server.resolved_registry_uri() == "databricks-uc"
    assert server.artifact_location is None  # a server chooses its own artifact root


def test_base_model_resource_resolves_the_embedded_default_and_checks_local_dirs(qlora_home, tiny_base_dir, tmp_path):
    default = BaseModelResource()
    assert (default.model_id, default.revision, default.trust_remote_code, default.allow_pickle_weights) == (
        EMBEDDED_ID, None, False, False)
    base = default.resolve()
    assert base.is_local and base.source.startswith(str(qlora_home / "base_models"))

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_base_dir, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(BaseModelError, match="pickle"):
        BaseModelResource(model_id=str(pickled)).resolve()
    assert BaseModelResource(model_id=str(pickled), allow_pickle_weights=True).resolve().is_local

    hub = BaseModelResource(model_id="org/model", revision="abc123").resolve()
    assert hub.identity == {"model_id": "org/model", "revision": "abc123"}


def test_artifact_store_resource_defaults_to_the_data_home(qlora_home, tmp_path):
    assert ArtifactStoreResource().store().root == qlora_home / "artifacts"
    assert ArtifactStoreResource(root=str(tmp_path)).store().root == tmp_path


def test_io_manager_refuses_an_asset_never_materialized(qlora_home):
    manager = ArtifactRefIOManager()
    context = dg.build_input_context(asset_key=dg.AssetKey("training_dataset"))
    with pytest.raises(FileNotFoundError, match="asset training_dataset has not been materialized yet") as info:
        manager.load_input(context)
    assert str(qlora_home / "artifacts" / "refs" / "training_dataset.json") in str(info.value)


def test_io_manager_hands_the_ref_on_and_notices_a_deleted_artifact(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    store.path("quantized_base_model", "fp1").mkdir(parents=True)
    ref = store.ref("quantized_base_model", "fp1")
    manager = ArtifactRefIOManager(root=str(tmp_path / "store"))
    key = dg.AssetKey("quantized_base_model")
    manager.handle_output(dg.build_output_context(asset_key=key), ref)
    assert sorted(p.name for p in (tmp_path / "store" / "refs").iterdir()) == ["quantized_base_model.json"]  # no .tmp
    assert manager.load_input(dg.build_input_context(asset_key=key)) == ref

    newer = store.ref("quantized_base_model", "fp2")
    store.path("quantized_base_model", "fp2").mkdir()
    manager.handle_output(dg.build_output_context(asset_key=key), newer)
    assert manager.load_input(dg.build_input_context(asset_key=key)) == newer  # the latest ref wins

    shutil.rmtree(newer.path)
    with pytest.raises(FileNotFoundError, match=f"asset quantized_base_model's artifact {newer.path} is gone"):
        manager.load_input(dg.build_input_context(asset_key=key))


def test_io_manager_carries_refs_between_real_assets(qlora_home):
    @dg.asset
    def upstream() -> ArtifactRef:
        store = ArtifactStore(qlora_home / "artifacts")
        store.path("upstream", "abc").mkdir(parents=True)
        return store.ref("upstream", "abc")

    @dg.asset
    def downstream(upstream: ArtifactRef) -> ArtifactRef:
        assert isinstance(upstream, ArtifactRef) and upstream.fingerprint == "abc"
        return upstream

    result = dg.materialize([upstream, downstream], resources={"io_manager": ArtifactRefIOManager()})
    assert result.success
    assert result.output_for_node("downstream") == ArtifactRef("upstream", "abc", str(qlora_home / "artifacts" / "upstream" / "abc"))
