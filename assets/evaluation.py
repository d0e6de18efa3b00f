"""adapter_evaluation: base against base+adapter on the held-out split."""

import dagster as dg

from assets.common import StepConfig, step_output, table_metadata, typed_metadata
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.core.store import ArtifactRef, materialize, read_summary
from ops.evaluation.report import (METRICS_DIR, EvaluationReport, duration_text, phases_markdown, report_table_md,
                                   write_report)
from ops.evaluation.spec import EvalSpec
from resources import ArtifactStoreResource, GPUResource, MLflowResource

# The 4-bit forward pass, generation and the metric library decide the numbers; the metric modules load by path.
CODE_VERSION = asset_code_version(__file__, ("bitsandbytes", "datasets", "evaluate", "peft", "torch", "transformers"),
                                  files=[METRICS_DIR])


class EvalConfig(StepConfig, EvalSpec):
    pass


@dg.asset(group_name="qlora", kinds={"pytorch", "huggingface"}, code_version=CODE_VERSION, pool="gpu")
def adapter_evaluation(
    context: dg.AssetExecutionContext,
    config: EvalConfig,
    qlora_adapter: ArtifactRef,
    quantized_base_model: ArtifactRef,
    training_dataset: ArtifactRef,
    store: ArtifactStoreResource,
    gpu: GPUResource,
    mlflow: MLflowResource,
) -> dg.Output:
    """Held-out loss, perplexity, exact match and ROUGE-L of the base and of base+adapter (report.json)."""
    spec = EvalSpec(**config.fingerprint_fields())
    inputs = {"adapter": qlora_adapter.fingerprint, "base": quantized_base_model.fingerprint,
              "dataset": training_dataset.fingerprint}
    fp = fingerprint(CODE_VERSION, spec.model_dump(), inputs)

    def work(tmp) -> EvaluationReport:
        # Imported here, after the cache check: a cache hit loads no torch, peft or evaluate.
        from ops.evaluation.base_cache import BaseCache, base_fingerprint
        from ops.evaluation.evaluator import evaluate_adapter

        device = gpu.device(context.log)
        # The base's numbers are kept apart from the adapter's: a new adapter on this base and data reuses them.
        base_fp = base_fingerprint(CODE_VERSION, quantized_base_model.fingerprint, training_dataset.fingerprint, spec,
                                   device.type, device.dtype_name)
        report = evaluate_adapter(f"{quantized_base_model.path}/model", f"{qlora_adapter.path}/adapter",
                                  training_dataset.path, spec, device, log=context.log.info,
                                  base_cache=BaseCache(store.store(), base_fp, force=config.force))
        write_report(report, tmp / "report.json")
        return report

    result = materialize(store.store(), "adapter_evaluation", fp, work, EvaluationReport, force=config.force,
                         log=context.log.info, config=spec.model_dump())
    r = result.summary
    from ops.evaluation.samples import sample_table_rows  # jinja2 for chat markers; after the cache check like torch

    run_url = mlflow.run_url(read_summary(qlora_adapter).get("mlflow_run_id"), log=context.log.warning)
    return step_output(result, {
        "comparison": dg.MetadataValue.md(report_table_md(r)),
        **typed_metadata(r, "eval_rows", "generation_rows", "seconds", "base_cache_hit", "base_fingerprint",
                         **{f"{part}_{name}": r.value(f"{part}.{name}")
                            for part, name in (("tuned", "eval_loss"), ("base", "eval_loss"), ("tuned", "exact_match"),
                                               ("tuned", "rouge_l"))}),
        "duration": duration_text(r.seconds),
        "phases": dg.MetadataValue.md(phases_markdown(r)),
        "samples": table_metadata(sample_table_rows(r.samples)),  # a table: shown inline, however long
        "report": dg.MetadataValue.path(f"{result.ref.path}/report.json"),
        **({"mlflow_run": dg.MetadataValue.url(run_url)} if run_url else {}),
    })
