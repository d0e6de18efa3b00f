"""qlora_adapter: LoRA adapters trained on the frozen 4-bit base with a paged optimizer."""

from pathlib import Path

import dagster as dg

from assets.common import StepConfig, md_table, step_output, typed_metadata
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.core.store import ArtifactRef, materialize
from ops.train.loss_curve import LOSS_CURVE_FILE, markdown_image, markdown_sparkline
from ops.train.spec import TrainResult, TrainSpec
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
    spec, artifacts = TrainSpec(**config.fingerprint_fields()), store.store()
    inputs = {"dataset": training_dataset.fingerprint, "base": quantized_base_model.fingerprint}
    fp = fingerprint(CODE_VERSION, spec.model_dump(), inputs)

    def work(tmp) -> TrainResult:
        # Imported here, after the cache check: a cache hit loads no torch, peft or MLflow.
        from ops.registry.tracking import RunNotStarted
        from ops.train.tracked import train_tracked

        try:
            return train_tracked(f"{quantized_base_model.path}/model", training_dataset.path, tmp, spec,
                                 gpu.device(context.log), checkpoint_dir=artifacts.work_dir("qlora_adapter", fp),
                                 target=mlflow.target(), fingerprint=fp, inputs=inputs, dagster_run_id=context.run_id,
                                 log=context.log.info, warn=context.log.warning)
        except RunNotStarted as err:  # the tracking server may be briefly away; nothing has been trained yet
            context.log.warning(f"{err}; retrying")
            raise dg.RetryRequested(max_retries=3, seconds_to_wait=5) from err

    result = materialize(artifacts, "qlora_adapter", fp, work, TrainResult, force=config.force, log=context.log.info,
                         config=spec.model_dump())
    s = result.summary
    metadata = typed_metadata(
        s, "trainable_params", "steps", "max_steps", "epochs", "final_loss", "best_step", "best_eval_loss",
        "stopped_early", "tokens_per_second", "padding_share", "wall_seconds", "optimizer", "device", "compute_dtype",
        "mlflow_run_id",
        trainable_share_pct=100 * s.trainable_share, peak_memory_mb=s.peak_memory_bytes / 2**20,
        estimated_peak_memory_mb=s.estimated_peak_memory_bytes / 2**20 if s.estimated_peak_memory_bytes else None)
    curve = Path(result.ref.path) / LOSS_CURVE_FILE
    if curve.is_file():  # the training (and eval) loss as a picture, and the numbers behind it
        # inline: a sparkline (train blue, eval orange); the full chart with axes opens from "Show Markdown"
        metadata["loss_curve"] = dg.MetadataValue.md(markdown_sparkline(s.loss_history, s.eval_history))
        metadata["loss_curve_chart"] = dg.MetadataValue.md(markdown_image(curve))
        metadata["loss_history"] = dg.MetadataValue.md(md_table([{"step": st, "loss": l} for st, l in s.loss_history]))
    if s.eval_history:  # the held-out loss at each evaluation; best_step names the one the adapter holds
        metadata["eval_history"] = dg.MetadataValue.md(md_table([{"step": st, "eval_loss": l} for st, l in s.eval_history]))
    return step_output(result, metadata)
