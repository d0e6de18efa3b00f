"""quantized_base_model: the frozen base in NF4 with double quantization, saved as a 4-bit checkpoint."""


import dagster as dg

from assets.common import StepConfig, step_output
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.model.quantize import quantize_base
from ops.model.spec import QuantSpec
from ops.core.store import materialize
from resources import ArtifactStoreResource, BaseModelResource, GPUResource

# bitsandbytes quantizes, transformers loads and saves, torch holds the weights.
CODE_VERSION = asset_code_version(__file__, ("bitsandbytes", "torch", "transformers"))


class QuantizeConfig(StepConfig, QuantSpec):
    pass


@dg.asset(group_name="qlora", kinds={"pytorch", "huggingface"}, code_version=CODE_VERSION)
def quantized_base_model(
    context: dg.AssetExecutionContext,
    config: QuantizeConfig,
    store: ArtifactStoreResource,
    base_model: BaseModelResource,
    gpu: GPUResource,
) -> dg.Output:
    """The base model quantized to 4-bit NF4 with double quantization (bitsandbytes), with its tokenizer."""
    base = base_model.resolve()
    device = gpu.device(context.log)
    fp = fingerprint(CODE_VERSION, config.fingerprint_fields(), {"base": base.identity, "device": device.type,
                                                                  "compute_dtype": device.dtype_name})

    def work(tmp):
        return quantize_base(base, QuantSpec(**config.fingerprint_fields()), device, tmp,
                             trust_remote_code=base_model.trust_remote_code, log=context.log.info)

    result = materialize(store.store(), "quantized_base_model", fp, work, config.force, context.log.info,
                         config=config.fingerprint_fields())
    s = result.summary
    return step_output(result, {
        "base_model_id": s["base_model_id"],
        "device": s["device"],
        "compute_dtype": s["compute_dtype"],
        "compute_dtype_reason": s.get("compute_dtype_reason") or "",
        "layers_off_packed_cpu_kernel": dg.MetadataValue.int(s.get("layers_off_packed_cpu_kernel") or 0),
        "quant_type": s["quant_type"],
        "double_quant": s["double_quant"],
        "total_params": dg.MetadataValue.int(s["total_params"]),
        "quantized_params": dg.MetadataValue.int(s["quantized_params"]),
        "bits_per_quantized_weight": dg.MetadataValue.float(s["bits_per_quantized_weight"]),
        "mean_abs_quant_error": dg.MetadataValue.float(s["mean_abs_quant_error"] or float("nan")),
        "size_on_disk_mb": dg.MetadataValue.float(s["size_on_disk_bytes"] / 2**20),
        "bf16_size_mb": dg.MetadataValue.float(s["bf16_size_bytes"] / 2**20),
    })
