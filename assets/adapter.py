"""qlora_adapter: LoRA adapters trained on the frozen 4-bit base with a paged optimizer, under torchrun (one or
more processes, on one or more machines) launched through Dagster Pipes by the `training_launcher` resource (a
subprocess of the step; on Kubernetes, optionally a training pod)."""

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from assets.common import StepConfig, md_table, step_output, typed_metadata
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.core.paths import REPO_ROOT
from ops.core.store import ArtifactRef, materialize
from ops.train.launch import TrainJob, launch_command, terminal_name
from ops.train.launch_spec import LaunchSpec
from ops.train.loss_curve import LOSS_CURVE_FILE, markdown_image, markdown_sparkline
from ops.train.spec import TrainResult, TrainSpec
from resources import ArtifactStoreResource, GPUResource, MLflowResource, TrainingLauncher, TrainingLaunchFailed

if TYPE_CHECKING:  # what each rank runs, started by module name under torchrun and never imported here: the code
    # version below follows its imports (the trainer, the callbacks) as if this module made them
    from ops.train import pipes_entry  # noqa: F401

# The training stack: each one's kernels, initialisation or defaults decide the trained weights.
CODE_VERSION = asset_code_version(__file__, ("accelerate", "bitsandbytes", "peft", "torch", "transformers"))


class TrainConfig(StepConfig, TrainSpec, LaunchSpec):
    pass


class TrainingProcessError(RuntimeError):
    """A training rank (or torchrun) failed; the message names the rank, how it died, and where a rerun resumes."""


def run_torchrun(context: dg.AssetExecutionContext, launcher: TrainingLauncher, job: TrainJob, job_file: Path,
                 extras: dict[str, str]) -> None:
    """Run this machine's torchrun through `launcher` (a subprocess of the step, or a training pod) and Dagster Pipes:
    rank 0's lines reach the run log, its end the step.

    Raises:
        TrainingProcessError: one line from the launcher's failure summary (or the launcher's error when it wrote
            none); the failure file is on the data home, which a training pod shares.
    """
    for node in range(1, job.launch.nnodes):  # the other machines join the rendezvous at rdzv_endpoint
        context.log.info(f"machine {node} of {job.launch.nnodes}: run  cd {shlex.quote(str(REPO_ROOT))} && "
                         f"{shlex.join(launch_command(job_file, node))}")
    failure_file = Path(job.out_dir) / "launch_failure.json"
    try:
        launcher.launch(context, launch_command(job_file, 0, failure_file), job.launch.nproc_per_node, extras)
    except TrainingLaunchFailed as err:
        line = json.loads(failure_file.read_text())["message"] if failure_file.is_file() else f"training failed: {err}"
        raise TrainingProcessError(line) from None


@dg.asset(group_name="qlora", kinds={"pytorch", "huggingface", "mlflow"}, code_version=CODE_VERSION, pool="gpu")
def qlora_adapter(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    training_dataset: ArtifactRef,
    quantized_base_model: ArtifactRef,
    store: ArtifactStoreResource,
    gpu: GPUResource,
    mlflow: MLflowResource,
    training_launcher: TrainingLauncher,
) -> dg.Output:
    """LoRA adapters (PEFT) trained with QLoRA on the 4-bit base; loss goes to MLflow and the run log."""
    fields, artifacts = config.fingerprint_fields(), store.store()
    spec, launch = TrainSpec(**fields), LaunchSpec(**fields)
    inputs = {"dataset": training_dataset.fingerprint, "base": quantized_base_model.fingerprint}
    # the processes decide the examples a step (batch_size x grad_accum x world_size); where they meet does not
    fp = fingerprint(CODE_VERSION, {**spec.model_dump(), "world_size": launch.world_size()}, inputs)

    def work(tmp) -> TrainResult:
        # Imported here, after the cache check: a cache hit loads no MLflow (and this process never loads torch).
        from ops.registry.tracking import RunNotStarted
        from ops.train.run_tracking import close_run, finish_adapter_run, open_adapter_run

        checkpoints, target = artifacts.work_dir("qlora_adapter", fp), mlflow.target()
        try:
            run_id = open_adapter_run(spec, checkpoints, target, fp, inputs, context.run_id, context.log.info)
        except RunNotStarted as err:  # the tracking server may be briefly away; nothing has been trained yet
            context.log.warning(f"{err}; retrying")
            raise dg.RetryRequested(max_retries=3, seconds_to_wait=5) from err
        job = TrainJob(model_dir=f"{quantized_base_model.path}/model", dataset_dir=str(training_dataset.path),
                       out_dir=str(tmp), checkpoint_dir=str(checkpoints), spec=spec.model_dump(),
                       require_gpu=gpu.require_gpu, launch=launch, rdzv_id=fp)
        try:
            run_torchrun(context, training_launcher, job, job.write(Path(checkpoints) / "launch.json"),
                         {"mlflow_tracking_uri": target.tracking_uri, "mlflow_run_id": run_id,
                          "progress_tty": terminal_name() or ""})
            result = TrainResult.model_validate_json((Path(tmp) / "train_summary.json").read_text())
        except BaseException:
            close_run(target.tracking_uri, run_id, "FAILED", {}, context.log.warning)  # a rerun resumes this run
            raise
        return finish_adapter_run(result, target, run_id, context.log.warning)

    result = materialize(artifacts, "qlora_adapter", fp, work, TrainResult, force=config.force, log=context.log.info,
                         config=spec.model_dump())
    s = result.summary
    metadata = typed_metadata(
        s, "trainable_params", "steps", "max_steps", "epochs", "final_loss", "best_step", "best_eval_loss",
        "stopped_early", "tokens_per_second", "padding_share", "wall_seconds", "optimizer", "device", "compute_dtype",
        "mlflow_run_id", "world_size",
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
