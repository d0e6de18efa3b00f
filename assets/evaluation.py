"""adapter_evaluation: base against base+adapter on the held-out split."""

import dagster as dg

from assets.common import StepConfig, md_table, step_output
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.core.store import ArtifactRef, materialize
from ops.evaluation.report import METRICS_DIR, EvaluationReport, report_table_md, write_report
from ops.evaluation.spec import EvalSpec
from resources import ArtifactStoreResource, GPUResource

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
) -> dg.Output:
    """Held-out loss, perplexity, exact match and ROUGE-L of the base and of base+adapter (report.json)."""
    spec = EvalSpec(**config.fingerprint_fields())
    inputs = {"adapter": qlora_adapter.fingerprint, "base": quantized_base_model.fingerprint,
              "dataset": training_dataset.fingerprint}
    fp = fingerprint(CODE_VERSION, spec.model_dump(), inputs)

    def work(tmp) -> EvaluationReport:
        # Imported here, after the cache check: a cache hit loads no torch, peft or evaluate.
        from ops.evaluation.evaluator import evaluate_adapter

        report = evaluate_adapter(f"{quantized_base_model.path}/model", f"{qlora_adapter.path}/adapter",
                                  training_dataset.path, spec, gpu.device(context.log), log=context.log.info)
        write_report(report, tmp / "report.json")
        return report

    result = materialize(store.store(), "adapter_evaluation", fp, work, EvaluationReport, force=config.force,
                         log=context.log.info, config=spec.model_dump())
    r = result.summary
    return step_output(result, {
        "comparison": dg.MetadataValue.md(report_table_md(r)),
        **{f"{part}_{name}": dg.MetadataValue.float(r.value(f"{part}.{name}"))
           for part, name in (("tuned", "eval_loss"), ("base", "eval_loss"), ("tuned", "exact_match"),
                              ("tuned", "rouge_l"))},
        "samples": dg.MetadataValue.md(md_table(r.samples)),
        "report": dg.MetadataValue.path(f"{result.ref.path}/report.json"),
    })
