"""bitsandbytes' packed 4-bit CPU kernel: keep layers it cannot take off it, and undo its repacking before weights are used.

On CPUs with AVX512-BF16 (bitsandbytes' `has_avx512bf16()`), `Linear4bit.forward` repacks its weight in place the
first time it runs in eval mode without gradients (`_convert_weight_packed_for_cpu`): a blocked nibble layout, bf16
absmax, no double quantization. That converter asserts out_features % 32 == 0 and reshapes absmax to
(out, in // blocksize), so other shapes fail (`N must be divisible by block_n`; Qwen2's 352-wide MLP: "shape
'[128, 5]' is invalid"). A repacked layer also breaks what reads the weights afterwards: `dequantize_4bit` reads
garbage, training takes an inference-only kernel, and bitsandbytes' own inverse rounds absmax through bf16 (and,
without double quantization, leaves it transposed). Hence three tools:

- `guard_packed_kernel(model)`: after loading, keep layers whose shape the kernel cannot take off it, log it once,
  remember each layer's standard quantization state, and restore it before any `state_dict()` (saving);
- `restore_standard_layout(model)`: put repacked layers back, exactly where the state was remembered;
- `named_kernel_errors(step, model)`: an error that still escapes a 4-bit layer becomes one line naming the step,
  the layer, its shape and the CPU.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import bitsandbytes as bnb
import torch
from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse, quantize_blockwise

from .cpu_features import CpuFeatures, cpu_features

PACKED_BLOCK_N = 32  # the block_n of bitsandbytes' _convert_weight_packed_for_cpu (0.50.x): out_features must divide by it
_STANDARD = "_qlora_standard_quant_state"  # attribute on a Linear4bit holding its pre-packing quantization state
_SAVE_HOOK = "_qlora_restores_before_saving"  # set once the state_dict pre-hook is registered
_logger = logging.getLogger(__name__)


class PackedKernelError(RuntimeError):
    """A 4-bit layer failed inside bitsandbytes; the message names the step, the layer, its shape and the CPU."""


def packed_kernel_rejects(out_features: int, in_features: int, blocksize: int) -> str | None:
    """Why bitsandbytes' packed CPU kernel cannot take a 4-bit weight of this shape, or None when it can.

    Args:
        out_features: rows of the weight (N); the converter packs them in blocks of 32.
        in_features: columns of the weight (K); absmax is reshaped to (N, K // blocksize), so every row must
            hold whole quantization blocks.
        blocksize: the 4-bit quantization block size (64 for QLoRA's NF4).

    Returns:
        A short reason ("out_features 120 is not a multiple of 32"), or None for a shape the kernel takes.
    """
    if out_features % PACKED_BLOCK_N:
        return f"out_features {out_features} is not a multiple of {PACKED_BLOCK_N}"
    if in_features % blocksize:
        return f"in_features {in_features} is not a multiple of the blocksize {blocksize}"
    return None


def linear4bit_layers(model: torch.nn.Module) -> dict[str, bnb.nn.Linear4bit]:
    """Every bitsandbytes 4-bit linear layer of `model` (through PEFT wrappers), by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


@dataclass
class _StandardState:
    quant_state: Any  # the QuantState object this was taken from (packing mutates that same object)
    fields: dict[str, Any]  # its absmax, state2, offset, nested, dtype before packing


def _is_packed(layer: bnb.nn.Linear4bit) -> bool:
    return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))


def _remember_standard_state(layer: bnb.nn.Linear4bit) -> None:
    qs = layer.weight.quant_state
    if qs is None or _is_packed(layer):
        return
    names = ("absmax", "nested", "dtype") + (("state2", "offset") if qs.nested else ())
    # References, not copies: packing assigns new tensors to these attributes and leaves the old ones untouched.
    setattr(layer, _STANDARD, _StandardState(qs, {n: getattr(qs, n) for n in names}))
    if not getattr(layer, _SAVE_HOOK, False):
        layer.register_state_dict_pre_hook(_restore_before_saving)
        setattr(layer, _SAVE_HOOK, True)


def _restore_before_saving(module: bnb.nn.Linear4bit, prefix: str, keep_vars: bool) -> None:
    """state_dict pre-hook: restore exactly before bitsandbytes' own (lossy) inverse runs in _save_to_state_dict."""
    restore_layer(module)


def guard_packed_kernel(model: torch.nn.Module, log: Callable[[str], Any] | None = None,
                        features: CpuFeatures | None = None) -> list[tuple[str, tuple[int, int], str]]:
    """Keep 4-bit layers that bitsandbytes' packed CPU kernel cannot take off that kernel; call after loading.

    Layers bitsandbytes would repack (`support_avx512bf16_for_cpu`, true only on CPUs with AVX512-BF16) whose
    shape `packed_kernel_rejects` are switched to the standard kernel, and one line says how many and which
    shapes. Every layer's standard quantization state is remembered so that `restore_standard_layout` can undo
    a repacking exactly, and `state_dict()` (every save) restores a layer first.

    Args:
        model: a model holding bitsandbytes `Linear4bit` layers (a PEFT model works too).
        log: where the one line goes (default: this module's logger, as a warning).
        features: the CPU named in the line (default: this machine's).

    Returns:
        (layer name, (out_features, in_features), reason) for each layer kept off the kernel; empty on CPUs where
        bitsandbytes never repacks.
    """
    held = []
    for name, layer in linear4bit_layers(model).items():
        if layer.weight.device.type != "cpu":  # bitsandbytes repacks only for CPU inputs
            continue
        _remember_standard_state(layer)
        if not getattr(layer, "support_avx512bf16_for_cpu", False) or layer.weight.quant_state is None:
            continue
        reason = packed_kernel_rejects(layer.out_features, layer.in_features, layer.weight.quant_state.blocksize)
        if reason is not None:
            layer.support_avx512bf16_for_cpu = False
            held.append((name, (layer.out_features, layer.in_features), reason))
    if held:
        shapes = Counter((shape, reason) for _, shape, reason in held)
        listed = "; ".join(f"{n} x [{o}, {i}] ({reason})" for ((o, i), reason), n in shapes.items())
        (log or _logger.warning)(
            f"{len(held)} of {len(linear4bit_layers(model))} 4-bit layers stay on bitsandbytes' standard CPU kernel, "
            f"not its packed kernel for this CPU ({(features or cpu_features()).describe()}): {listed}")
    return held


def _unpack(layer: bnb.nn.Linear4bit) -> None:
    qs = layer.weight.quant_state
    # bitsandbytes' inverse restores the nibble layout exactly; it is given a copy of the state because its
    # absmax round trip is lossy, and the state is set here instead.
    weight, _ = _convert_weight_packed_for_cpu_inverse(layer.weight.data, copy.copy(qs))
    standard = getattr(layer, _STANDARD, None)
    if standard is not None and standard.quant_state is qs:
        for name, value in standard.fields.items():
            setattr(qs, name, value)
    else:  # repacked before the guard saw it: rebuild the state from the bf16 absmax the kernel used
        absmax = qs.absmax.T.reshape(-1).float()  # packed absmax is (in // blocksize, out); standard is row-major (out, ...)
        if qs.original_nested:
            offset = absmax.mean()
            qs.absmax, qs.state2 = quantize_blockwise(absmax - offset, blocksize=256)  # 256: bnb's nested blocksize
            qs.offset, qs.nested = offset, True
        else:
            qs.absmax = absmax
        qs.dtype = qs.original_dtype
    qs.packing_format_for_cpu = False
    layer.weight.data = weight


def restore_layer(layer: bnb.nn.Linear4bit) -> bool:
    """Put one 4-bit layer back into the standard layout if bitsandbytes repacked it; True when it had."""
    if layer.weight.quant_state is None or not _is_packed(layer):
        return False
    _unpack(layer)
    return True


def restore_standard_layout(model: torch.nn.Module) -> int:
    """Put every 4-bit layer that bitsandbytes repacked for its CPU kernel back into the standard layout.

    Call before anything reads or trains through the 4-bit weights after an eval pass: dequantizing (export,
    quantization error), saving, training. Exact for layers `guard_packed_kernel` saw before they were repacked;
    otherwise absmax comes back from the bf16 copy the packed kernel used (relative error up to ~0.4%).

    Returns:
        How many layers were restored (0 on CPUs where bitsandbytes never repacks).
    """
    return sum(restore_layer(layer) for layer in linear4bit_layers(model).values())


def _failing_layer(tb) -> bnb.nn.Linear4bit | None:
    """The innermost Linear4bit whose forward is on the traceback `tb`, if any."""
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self") if tb.tb_frame.f_code.co_name == "forward" else None
        if isinstance(candidate, bnb.nn.Linear4bit):
            found = candidate
        tb = tb.tb_next
    return found


@contextmanager
def named_kernel_errors(step: str, *models: torch.nn.Module) -> Iterator[None]:
    """Turn an error raised inside a 4-bit layer's forward into one `PackedKernelError` line.

    The line names `step`, the layer (its name in one of `models`), its shape and blocksize, whether it was
    on the packed kernel, the CPU's features, and the original error's type and first line. Other errors pass.
    """
    try:
        yield
    except PackedKernelError:
        raise
    except Exception as err:
        layer = _failing_layer(err.__traceback__)
        if layer is None:
            raise
        names = {id(m): n for model in models for n, m in model.named_modules()}
        name = names.get(id(layer), type(layer).__name__)
        qs = layer.weight.quant_state
        kernel = "packed" if getattr(layer, "support_avx512bf16_for_cpu", False) else "standard"
        first_line = (str(err).strip().splitlines() or [""])[0]
        error = PackedKernelError(
            f"{step}: bitsandbytes failed in 4-bit layer {name} [out_features {layer.out_features}, in_features "
            f"{layer.in_features}, blocksize {getattr(qs, 'blocksize', '?')}] on its {kernel} CPU kernel "
            f"(CPU: {cpu_features().describe()}): {type(err).__name__}: {first_line or '(no message)'}")
        error.original = err  # the full trace stays reachable for debugging, not printed
        raise error from None
