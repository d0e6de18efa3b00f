"""quantized_base_model: the frozen base in NF4 with double quantization, saved as a 4-bit checkpoint."""

import dagster as dg

from assets.common import StepConfig, step_output, typed_metadata
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.core.store import materialize
from ops.model.spec import QuantizedBase, QuantSpec
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
    base, spec = base_model.resolve(), QuantSpec(**config.fingerprint_fields())
    kind = gpu.kind()  # (device type, compute dtype), without torch where the machine allows
    fp = fingerprint(CODE_VERSION, spec.model_dump(), {"base": base.identity, "device": kind[0],
                                                       "compute_dtype": kind[1]})

    def work(tmp) -> QuantizedBase:
        # Imported here, after the cache check: a cache hit loads no torch or bitsandbytes.
        from ops.model.quantize import quantize_base

        return quantize_base(base, spec, gpu.device(context.log, expect=kind), tmp,
                             trust_remote_code=base_model.trust_remote_code, log=context.log.info)

    result = materialize(store.store(), "quantized_base_model", fp, work, QuantizedBase, force=config.force,
                         log=context.log.info, config=spec.model_dump())
    s = result.summary
    return step_output(result, typed_metadata(
        s, "base_model_id", "device", "compute_dtype", "compute_dtype_reason", "layers_off_packed_cpu_kernel",
        "quant_type", "double_quant", "total_params", "quantized_params", "bits_per_quantized_weight",
        mean_abs_quant_error=s.mean_abs_quant_error if s.mean_abs_quant_error is not None else float("nan"),
        size_on_disk_mb=s.size_on_disk_bytes / 2**20, bf16_size_mb=s.bf16_size_bytes / 2**20))
