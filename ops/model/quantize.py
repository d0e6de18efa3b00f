"""Materialise the 4-bit base: NF4 with double quantization through bitsandbytes, saved and reloaded once."""

from __future__ import annotations

import time
from pathlib import Path

import bitsandbytes as bnb
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from .base_resolution import ResolvedBase
from .cpu_features import cpu_features
from .cpu_kernels import guard_packed_kernel, linear4bit_layers, named_kernel_errors, restore_layer
from .device import DeviceInfo, compute_dtype_choice, fix_cpu_mmap_threshold
from .loading import device_map, load_quantized_model, load_tokenizer
from .spec import QuantizedBase, QuantSpec


def build_bnb_config(spec: QuantSpec, device: DeviceInfo) -> BitsAndBytesConfig:
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.quant_type,
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_compute_dtype=compute_dtype_choice(device.type, spec.compute_dtype)[0],
    )


def storage_bits(weight) -> int:
    """Bits that one 4-bit weight matrix costs: packed codes, block scales and, when nested, their scales.

    The NF4/FP4 codebooks are fixed lookup tables shared by every layer, so they are not counted, as in the
    QLoRA paper's 4 + 8/64 + 32/(64*256) = 4.127 bits per parameter with double quantization.
    """
    qs = weight.quant_state
    bits = weight.data.numel() * weight.data.element_size() * 8 + qs.absmax.numel() * qs.absmax.element_size() * 8
    if qs.nested:
        bits += qs.state2.absmax.numel() * qs.state2.absmax.element_size() * 8 + 32  # + the fp32 offset
    return bits


def _source_tensors(source_dir: Path) -> dict[str, Path]:
    index = {}
    for f in sorted(source_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            index.update({k: f for k in sf.keys()})
    return index


def quantization_error(layers: dict[str, bnb.nn.Linear4bit], source_dir: Path | None) -> tuple[float | None, int]:
    """Mean |dequantized - original| over the 4-bit weights whose originals are in local safetensors files."""
    if source_dir is None:
        return None, 0
    index = _source_tensors(source_dir)
    total, count, measured = 0.0, 0, 0
    for name, layer in layers.items():
        file = index.get(f"{name}.weight")
        if file is None:
            continue
        restore_layer(layer)  # a layer repacked for bnb's CPU kernel would dequantize to garbage
        with safe_open(str(file), framework="pt") as sf:
            original = sf.get_tensor(f"{name}.weight").float()
        w = layer.weight
        deq = bnb.functional.dequantize_4bit(w.data, w.quant_state).float().cpu()
        total += (deq - original).abs().sum().item()
        count += original.numel()
        measured += 1
    return (total / count if count else None), measured


def _hub_snapshot(base: ResolvedBase) -> Path | None:
    """The local snapshot of a hub model that from_pretrained just downloaded, to measure the error against."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base.source, revision=base.revision, local_files_only=True))
    except Exception:
        return None


def _weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def quantize_base(
    base: ResolvedBase,
    spec: QuantSpec,
    device: DeviceInfo,
    out_dir: Path,
    trust_remote_code: bool = False,
    token: str | None = None,
    log=print,
) -> QuantizedBase:
    """Load the base in 4-bit, save it to `out_dir/model` with its tokenizer, and reload it as a check.

    Args:
        base: the resolved base (embedded, local folder or hub id).
        spec: quant type, double quantization, compute dtype.
        device: where to quantize; its type decides the compute dtype under `auto`.
        out_dir: the step's folder; the checkpoint goes to `out_dir / "model"`.
        trust_remote_code, token: passed to transformers.
        log: one line per stage.
    Returns:
        parameter counts, bits per quantized weight, quantization error, sizes in bytes, seconds.
    Raises:
        RuntimeError: no layer was quantized, or the reloaded checkpoint computes something else.
        PackedKernelError: a kernel failure, named with the layer and the CPU.
    """
    started = time.time()
    if device.type == "cpu":
        fix_cpu_mmap_threshold()  # the load's freed fp32 tensors go back to the OS rather than stay in the heap
    bnb_config = build_bnb_config(spec, device)
    dtype_reason = compute_dtype_choice(device.type, spec.compute_dtype)[1]
    log(f"quantizing {base.model_id} to {spec.quant_type} (double quant {spec.double_quant}) on {device.type}, "
        f"compute dtype {dtype_reason}")
    model = AutoModelForCausalLM.from_pretrained(
        base.source, revision=base.revision, quantization_config=bnb_config, device_map=device_map(device),
        dtype=bnb_config.bnb_4bit_compute_dtype, trust_remote_code=trust_remote_code, token=token,
    )
    held = guard_packed_kernel(model, log)
    tokenizer = load_tokenizer(base.source, base.revision, trust_remote_code)
    model_dir = Path(out_dir) / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)

    layers = linear4bit_layers(model)
    if not layers:
        raise RuntimeError(f"{base.model_id}: no layer was quantized to 4-bit; is bitsandbytes working on {device.type}?")
    quantized_params = sum(layer.weight.quant_state.shape.numel() for layer in layers.values())
    bits = sum(storage_bits(layer.weight) for layer in layers.values())
    other_params = sum(p.numel() for n, p in model.named_parameters() if p.dtype not in (torch.uint8,))
    error, measured = quantization_error(layers, Path(base.source) if base.is_local else _hub_snapshot(base))
    log(f"saved 4-bit checkpoint: {len(layers)} layers, {bits / quantized_params:.3f} bits per quantized weight")

    reload_ok = _reload_check(model, tokenizer, model_dir, device)
    log("reloaded the saved checkpoint: outputs match")
    total_params = quantized_params + other_params
    return QuantizedBase(
        base_model_id=base.model_id,
        base_identity=base.identity,
        quant_type=spec.quant_type,
        double_quant=bool(next(iter(layers.values())).weight.quant_state.nested),
        compute_dtype=str(bnb_config.bnb_4bit_compute_dtype).removeprefix("torch."),
        compute_dtype_reason=dtype_reason,
        cpu=cpu_features().describe() if device.type == "cpu" else None,
        layers_off_packed_cpu_kernel=len(held),
        device=device.type,
        device_name=device.name,
        quantized_layers=len(layers),
        quantized_params=quantized_params,
        unquantized_params=other_params,
        total_params=total_params,
        bits_per_quantized_weight=bits / quantized_params,
        mean_abs_quant_error=error,
        layers_measured_for_error=measured,
        size_on_disk_bytes=_weights_bytes(model_dir),
        bf16_size_bytes=total_params * 2,
        reload_check=reload_ok,
        seconds=time.time() - started,
    )


def _reload_check(model, tokenizer, model_dir: Path, device: DeviceInfo) -> bool:
    """The saved checkpoint must load back and compute what the in-memory model computes."""
    ids = tokenizer("The quick brown fox", return_tensors="pt").input_ids.to(model.device)
    reloaded = load_quantized_model(model_dir, device, log=lambda _: None)  # the first load already said it
    with torch.inference_mode(), named_kernel_errors("quantize (reload check)", model, reloaded):
        a, b = model(ids).logits.float(), reloaded(ids).logits.float()
    if not torch.allclose(a, b, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"reloaded 4-bit checkpoint in {model_dir} disagrees with the model that was saved "
                           f"(max |diff| {(a - b).abs().max().item():.3g})")
    del reloaded
    return True
