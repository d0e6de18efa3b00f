"""registered_adapter: the adapter as an MLflow model, a new registry version with lineage tags and an alias."""


from pathlib import Path

import dagster as dg

from assets.common import StepConfig
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.registry.register import register_once, registry_lock
from ops.registry.register import register_adapter
from ops.registry.spec import RegistrySpec
from ops.core.store import ArtifactRef, read_summary
from ops.registry.tracking import check_tracking_server, code_version, redact_uri
from resources import BaseModelResource, MLflowResource

# The logged model's format (mlflow) and the versions its requirements pin (pyfunc_model.RUNTIME_PACKAGES).
CODE_VERSION = asset_code_version(__file__, ("accelerate", "bitsandbytes", "mlflow", "pandas", "peft", "safetensors",
                                             "tokenizers", "torch", "transformers"))


class RegisterConfig(StepConfig, RegistrySpec):
    def fingerprint_fields(self) -> dict:
        # The gate decides an alias, not what is registered: changing it must not register the adapter again.
        return self.model_dump(exclude={"force", "primary_metric", "min_improvement"})


def _lineage(context, base: dict, refs: dict[str, ArtifactRef], fp: str) -> dict[str, str]:
    identity = base["base_identity"]
    return {
        "base_model_id": str(identity["model_id"]),
        "base_model_revision": str(identity.get("revision") or identity.get("content_hash")),
        **{f"{name}_fingerprint": ref.fingerprint for name, ref in refs.items()},
        "registration_fingerprint": fp,
        "code_version": code_version(),
        "dagster_run_id": context.run_id,
    }


# Retries ride out a tracking server that is briefly away; registration is idempotent, so a retry after a
# half-finished attempt cannot register the adapter twice.
@dg.asset(group_name="qlora", kinds={"mlflow"}, code_version=CODE_VERSION,
          retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL))
def registered_adapter(
    context: dg.AssetExecutionContext,
    config: RegisterConfig,
    training_dataset: ArtifactRef,
    quantized_base_model: ArtifactRef,
    qlora_adapter: ArtifactRef,
    adapter_evaluation: ArtifactRef,
    mlflow: MLflowResource,
    base_model: BaseModelResource,
) -> dg.MaterializeResult:
    """A new version of the adapter in the MLflow model registry, loadable with mlflow.pyfunc.load_model."""
    refs = {"dataset": training_dataset, "base": quantized_base_model, "adapter": qlora_adapter,
            "evaluation": adapter_evaluation}
    fp = fingerprint(CODE_VERSION, config.fingerprint_fields(), {k: r.fingerprint for k, r in refs.items()})
    summaries = {k: read_summary(r) for k, r in refs.items()}
    tracking_uri, registry_uri = mlflow.resolved_tracking_uri(), mlflow.resolved_registry_uri()

    report = summaries["evaluation"]
    check_tracking_server(tracking_uri)
    registration = dict(
        tracking_uri=tracking_uri, registry_uri=registry_uri, artifact_location=mlflow.artifact_location,
        experiment=mlflow.experiment, spec=RegistrySpec(**config.model_dump(exclude={"force"})),
        adapter_dir=Path(qlora_adapter.path) / "adapter", base_model_dir=Path(quantized_base_model.path) / "model",
        prompt_format=summaries["dataset"]["format"], system_message=summaries["dataset"].get("system_message"),
        # One name per param: the adapter's config is `adapter.*` here and on the training run it resumes.
        params={"base_model": base_model.model_id, **{k: s["config"] for k, s in summaries.items()}},
        metrics={"base": report["base"], "tuned": report["tuned"], "train_final_loss": summaries["adapter"]["final_loss"]},
        report_path=Path(adapter_evaluation.path) / "report.json", tags=_lineage(context, summaries["base"], refs, fp),
        run_id=summaries["adapter"].get("mlflow_run_id"), log=context.log.info, log_base=config.log_base,
    )
    if config.force:
        with registry_lock(tracking_uri):
            info = {**register_adapter(**registration), "cache_hit": False}
    else:  # idempotent: an adapter already registered under this fingerprint gets no second version
        info = register_once(**registration)
    return dg.MaterializeResult(
        metadata={
            "model_uri": info["model_uri"],  # models:/NAME/VERSION: always this adapter's version
            "model_name": info["model_name"],
            "version": dg.MetadataValue.int(info["version"]),
            "alias": info["alias"],
            "alias_uri": info["alias_uri"],  # moves with later registrations: may name another version
            "alias_version": dg.MetadataValue.int(info["alias_version"] or 0),  # 0: the alias is not set
            "version_aliases": ", ".join(info["version_aliases"]) or "none",
            "gate_decision": info["gate_decision"],  # champion or challenger (ops/registry/champion.py)
            "mlflow_run_id": info["run_id"],
            "tracking_uri": redact_uri(tracking_uri),
            "cache_hit": info["cache_hit"],
            "fingerprint": fp,
        },
        data_version=dg.DataVersion(fp),
    )
