"""qlora_adapter: LoRA adapters trained on the frozen 4-bit base with a paged optimizer."""


import dagster as dg

from assets.common import StepConfig, step_output
from ops.train.callbacks import MlflowLossCallback
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.train.spec import TrainSpec
from ops.core.store import ArtifactRef, materialize
from ops.registry.tracking import check_tracking_server, redact_uri, resume_or_start_run
from ops.train.trainer import train_adapter
from resources import ArtifactStoreResource, GPUResource, MLflowResource

# The training stack: each one's kernels, initialisation or defaults decide the trained weights.
CODE_VERSION = asset_code_version(__file__, ("accelerate", "bitsandbytes", "peft", "torch", "transformers"))


class TrainConfig(StepConfig, TrainSpec):
    pass


@dg.asset(group_name="qlora", kinds={"pytorch", "huggingface", "mlflow"}, code_version=CODE_VERSION, pool="gpu")
def qlora_adapter(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    training_dataset: ArtifactRef,
    quantized_base_model: ArtifactRef,
    store: ArtifactStoreResource,
    gpu: GPUResource,
    mlflow: MLflowResource,
) -> dg.Output:
    """LoRA adapters (PEFT) trained with QLoRA on the 4-bit base; loss goes to MLflow and the run log."""
    spec = TrainSpec(**config.fingerprint_fields())
    inputs = {"dataset": training_dataset.fingerprint, "base": quantized_base_model.fingerprint}
    fp = fingerprint(CODE_VERSION, spec.model_dump(), inputs)
    artifacts = store.store()

    def work(tmp):
        device = gpu.device(context.log)
        checkpoints = artifacts.work_dir("qlora_adapter", fp)
        tracking_uri = mlflow.resolved_tracking_uri()
        check_tracking_server(tracking_uri)  # before any training, not after hours of it
        tags = {"adapter_fingerprint": fp, "dagster_run_id": context.run_id,
                **{f"{k}_fingerprint": v for k, v in inputs.items()}}
        try:
            run_id = resume_or_start_run(checkpoints / "mlflow_run_id", tracking_uri, mlflow.experiment,
                                         f"adapter-{fp}", {"adapter": spec.model_dump()}, tags, mlflow.artifact_location)
        except Exception as err:  # the tracking server may be briefly away; nothing has been trained yet
            context.log.warning(f"MLflow at {redact_uri(tracking_uri)} did not take the run ({err}); retrying")
            raise dg.RetryRequested(max_retries=3, seconds_to_wait=5) from err
        context.log.info(f"MLflow run {run_id} at {redact_uri(tracking_uri)}: per-step loss is logged there")
        summary = train_adapter(
            f"{quantized_base_model.path}/model", training_dataset.path, tmp, spec, device,
            checkpoint_dir=checkpoints, callbacks=[MlflowLossCallback(tracking_uri, run_id, context.log.warning)],
            log=context.log.info,
        )
        return {**summary, "mlflow_run_id": run_id, "tracking_uri": redact_uri(tracking_uri)}

    result = materialize(artifacts, "qlora_adapter", fp, work, config.force, context.log.info, config=spec.model_dump())
    s = result.summary
    return step_output(result, {
        "trainable_params": dg.MetadataValue.int(s["trainable_params"]),
        "trainable_share_pct": dg.MetadataValue.float(100 * s["trainable_share"]),
        "steps": dg.MetadataValue.int(s["steps"]),
        "final_loss": dg.MetadataValue.float(s["final_loss"]),
        "tokens_per_second": dg.MetadataValue.float(s["tokens_per_second"]),
        "peak_memory_mb": dg.MetadataValue.float(s["peak_memory_bytes"] / 2**20),
        "wall_seconds": dg.MetadataValue.float(s["wall_seconds"]),
        "optimizer": s["optimizer"],
        "device": s["device"],
        "compute_dtype": s["compute_dtype"],
        "mlflow_run_id": s["mlflow_run_id"],
    })
