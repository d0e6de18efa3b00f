"""registered_adapter: the adapter as an MLflow model, a new registry version with lineage tags and an alias."""

import dagster as dg

from assets.common import StepConfig, typed_metadata
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.core.store import ArtifactRef
from ops.registry.spec import PublishSpec, RegistrySpec, registration_fields
from resources import BaseModelResource, MLflowResource, RegisteredModelResource

# The logged model's format (mlflow) and the versions its requirements pin (pyfunc_model.RUNTIME_PACKAGES).
CODE_VERSION = asset_code_version(__file__, ("accelerate", "bitsandbytes", "mlflow", "pandas", "peft", "safetensors",
                                             "tokenizers", "torch", "transformers"))


class RegisterConfig(StepConfig, PublishSpec):
    pass


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
    registered_model: RegisteredModelResource,
) -> dg.MaterializeResult:
    """A new version of the adapter in the MLflow model registry, loadable with mlflow.pyfunc.load_model."""
    refs = {"dataset": training_dataset, "base": quantized_base_model, "adapter": qlora_adapter,
            "evaluation": adapter_evaluation}
    spec = RegistrySpec(**registered_model.gate().model_dump(), **config.fingerprint_fields())
    fp = fingerprint(CODE_VERSION, registration_fields(spec), {k: r.fingerprint for k, r in refs.items()})
    # Imported here: the registry lookup of a cached registration loads MLflow, not the model stack.
    from ops.registry.publish import publish_adapter
    from ops.registry.tracking import redact_uri

    info = publish_adapter(refs, fp, spec, mlflow.target(), base_model.model_id, context.run_id, force=config.force,
                           log=context.log.info)
    links = {"mlflow_run": mlflow.run_url(info.run_id, log=context.log.warning),
             "model_version_page": mlflow.version_url(info.model_name, info.version)}
    # model_uri names this adapter's version; alias_uri moves with later registrations (alias_version: 0 if unset).
    return dg.MaterializeResult(
        metadata=typed_metadata(info, "model_uri", "model_name", "version", "alias", "alias_uri", "gate_decision",
                                "cache_hit", alias_version=info.alias_version or 0,
                                version_aliases=", ".join(info.version_aliases) or "none", mlflow_run_id=info.run_id,
                                tracking_uri=redact_uri(info.tracking_uri), fingerprint=fp)
        | {key: dg.MetadataValue.url(url) for key, url in links.items() if url},
        data_version=dg.DataVersion(fp),
    )
