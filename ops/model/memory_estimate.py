"""Peak training memory predicted before anything is loaded: from the model's shape, LoRA, batch and sequence.

    python -m ops.model.memory_estimate --config configs/llama3_8b_qlora_alpaca.yaml
    python -m ops.model.memory_estimate --model-config path/to/config.json --batch-size 4 --seq-len 1024

The formula is in `estimate_training_memory`; `ModelShape.from_config` reads a transformers config (or its
config.json) and `KNOWN_SHAPES` holds a few hub models' published shapes for recipes written without the hub.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

NF4_DOUBLE_QUANT_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # QLoRA paper (Dettmers et al. 2023), section 2: 4.127 bits
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAMW_BYTES_PER_TRAINABLE = 4 + 4 + 8  # fp32 LoRA weight, its fp32 gradient, two fp32 AdamW moments
LOSS_FP32_BUFFERS = 3  # cross-entropy on (tokens x vocab): fp32 logits copy, log-softmax saved, its gradient
# What the process holds before the model: Python with torch, transformers, peft, bitsandbytes and the Trainer
# imported (RSS 516 MB measured on the AVX2 2-core machine, benchmarks/memory.py "runtime MB"), or the CUDA context
# and cuBLAS workspace on a GPU (about 0.5 GiB on recent NVIDIA cards; torch's allocator figures do not count it).
RUNTIME_BYTES = {"cpu": 520 * 2**20, "cuda": 512 * 2**20}


class ModelShape(BaseModel):
    """The figures of a decoder-only transformer (Llama, Mistral, Qwen2, Gemma layout) that decide its memory."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: Any) -> "ModelShape":
        """From a transformers config object, a dict, or the path of a config.json (or of the folder holding it)."""
        if isinstance(config, (str, Path)):
            path = Path(config)
            config = json.loads((path / "config.json" if path.is_dir() else path).read_text())
        get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
        heads = get("num_attention_heads")
        return cls(vocab_size=get("vocab_size"), hidden_size=get("hidden_size"),
                   intermediate_size=get("intermediate_size"), num_hidden_layers=get("num_hidden_layers"),
                   num_attention_heads=heads, num_key_value_heads=get("num_key_value_heads") or heads,
                   head_dim=get("head_dim") or get("hidden_size") // heads,
                   tie_word_embeddings=bool(get("tie_word_embeddings", False)))

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one block: q, k, v, o, gate, up, down."""
        h, q, kv, i = self.hidden_size, self.num_attention_heads * self.head_dim, \
            self.num_key_value_heads * self.head_dim, self.intermediate_size
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]


# Published config.json figures of models the recipes use (the hub is not reachable everywhere this runs).
KNOWN_SHAPES: dict[str, ModelShape] = {
    name: ModelShape(vocab_size=v, hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                     num_attention_heads=a, num_key_value_heads=kv, head_dim=h // a, tie_word_embeddings=tied)
    for name, (v, h, i, layers, a, kv, tied) in {
        "meta-llama/Llama-3.1-8B": (128256, 4096, 14336, 32, 32, 8, False),
        "meta-llama/Llama-3.1-8B-Instruct": (128256, 4096, 14336, 32, 32, 8, False),
        "meta-llama/Llama-3.2-1B": (128256, 2048, 8192, 16, 32, 8, True),
        "meta-llama/Llama-3.2-3B": (128256, 3072, 8192, 28, 24, 8, True),
        "Qwen/Qwen2.5-7B": (152064, 3584, 18944, 28, 28, 4, False),
        "Qwen/Qwen2.5-7B-Instruct": (152064, 3584, 18944, 28, 28, 4, False),
        "mistralai/Mistral-7B-v0.1": (32000, 4096, 14336, 32, 32, 8, False),
        "mistralai/Mistral-7B-v0.3": (32768, 4096, 14336, 32, 32, 8, False),
        "mistralai/Mistral-7B-Instruct-v0.3": (32768, 4096, 14336, 32, 32, 8, False),
        "HuggingFaceTB/SmolLM-135M": (49152, 576, 1536, 30, 9, 3, True),
    }.items()
}


class MemoryEstimate(BaseModel):
    """Predicted peak memory of one training process, in bytes, with its parts."""

    quantized_weights: int  # the blocks' linear weights: 4-bit for QLoRA, else in the compute dtype
    other_weights: int  # embeddings, output head, norms: not quantized
    lora_state: int  # LoRA weights, gradients and AdamW moments
    activations: int
    loss: int  # logits and the cross-entropy buffers over tokens x vocabulary
    runtime: int
    total: int

    def describe(self) -> str:
        mb = lambda b: f"{b / 2**20:,.0f} MB"  # noqa: E731
        return (f"estimated peak {mb(self.total)} = linear weights {mb(self.quantized_weights)} + other weights "
                f"{mb(self.other_weights)} + LoRA and AdamW {mb(self.lora_state)} + activations "
                f"{mb(self.activations)} + logits and loss {mb(self.loss)} + runtime {mb(self.runtime)}")


def estimate_training_memory(shape: ModelShape, batch_size: int, seq_len: int, r: int, *,
                             quantized: bool = True, compute_dtype: str = "bfloat16",
                             other_weights_dtype: str | None = None, gradient_checkpointing: bool = True,
                             lora_dropout: bool = True, device_type: str = "cuda") -> MemoryEstimate:
    """Peak memory of LoRA training on every linear layer of the blocks (as `target_modules: all-linear`).

    Formula (bytes; B batch, T sequence length, L layers, h hidden, i intermediate, V vocabulary, P_lin the
    blocks' linear weights, c the compute dtype's bytes):
      quantized weights   P_lin * 4.127 / 8 (NF4 with double quantization, QLoRA paper section 2), or P_lin * c
      other weights       (V*h * (1 or 2 when untied) + (2L+1)*h) * bytes of `other_weights_dtype`
      LoRA state          r * sum(in + out) over the L*7 linears * 16 (fp32 weight, gradient, 2 AdamW moments)
      activations         B*T * c * (L*h + 2*A) with gradient checkpointing (each block's input is kept, one block
                          is recomputed with its gradients), B*T * c * L*A without, where A = 11h + 3*kv + 5i
                          (+ 7h + 2i with LoRA dropout) elements per token per block: the tensors a Llama block
                          saves for backward (norm inputs and outputs, q/k/v, rotated q/k, attention output, the
                          MLP's gate, up, activation and product), counted as in Korthikanti et al. 2022,
                          "Reducing Activation Recomputation in Large Transformer Models", section 4.1, for a
                          SwiGLU block with memory-efficient attention (no T^2 scores kept)
      logits and loss     B*T*V * (c + 3*4): logits, then fp32 buffers of the cross-entropy (transformers upcasts
                          logits to fp32 for the loss)
      runtime             `RUNTIME_BYTES[device_type]`: imported libraries (CPU RSS) or CUDA context
    Args:
        shape: the model's shape (`ModelShape.from_config`, or `KNOWN_SHAPES`).
        batch_size, seq_len: examples per device step and their padded length in tokens.
        r: LoRA rank.
        quantized: 4-bit base (QLoRA) rather than a 16-bit one.
        compute_dtype: "float32", "bfloat16" or "float16"; also the dtype of a non-quantized base.
        other_weights_dtype: dtype of embeddings, head and norms (default: the compute dtype).
        gradient_checkpointing: recompute activations in backward.
        lora_dropout: dropout > 0 keeps a dropped copy of each LoRA input.
        device_type: "cuda" or "cpu", for the runtime term.
    Returns:
        the parts and their total, in bytes. Checked against measured peaks in benchmarks/memory.py and
        tests/ops/model/test_memory_estimate.py.
    Raises:
        ValueError: a dtype name outside float32/bfloat16/float16, or a non-positive batch, length or rank.
    """
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("r", r)):
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    for dtype in (compute_dtype, other_weights_dtype or compute_dtype):
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    c, o = DTYPE_BYTES[compute_dtype], DTYPE_BYTES[other_weights_dtype or compute_dtype]
    L, h, i, V = shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size, shape.vocab_size
    kv = shape.num_key_value_heads * shape.head_dim
    linears = shape.linear_shapes()
    p_lin = L * sum(a * b for a, b in linears)
    quantized_weights = int(p_lin * NF4_DOUBLE_QUANT_BITS / 8) if quantized else p_lin * c
    other = (V * h * (1 if shape.tie_word_embeddings else 2) + (2 * L + 1) * h) * o
    lora = L * r * sum(a + b for a, b in linears) * ADAMW_BYTES_PER_TRAINABLE
    per_block = 11 * h + 3 * kv + 5 * i + ((7 * h + 2 * i) if lora_dropout else 0)
    tokens = batch_size * seq_len
    activations = tokens * c * ((L * h + 2 * per_block) if gradient_checkpointing else L * per_block)
    loss = tokens * V * (c + LOSS_FP32_BUFFERS * 4)
    runtime = RUNTIME_BYTES.get(device_type, RUNTIME_BYTES["cuda"])
    parts = dict(quantized_weights=quantized_weights, other_weights=other, lora_state=lora,
                 activations=activations, loss=loss, runtime=runtime)
    return MemoryEstimate(**parts, total=sum(parts.values()))


def estimate_for_checkpoint(model_dir: str | Path, batch_size: int, seq_len: int, r: int, compute_dtype: str,
                            gradient_checkpointing: bool = True, lora_dropout: bool = True,
                            device_type: str = "cuda") -> MemoryEstimate:
    """`estimate_training_memory` for a saved checkpoint, read from its config.json alone (nothing loaded).

    A `quantization_config` in the file means a 4-bit base; its unquantized weights load in the compute dtype
    (`ops.model.loading.load_quantized_model`) and stay there (`prepare_for_training`).
    """
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return estimate_training_memory(
        ModelShape.from_config(config), batch_size, seq_len, r, quantized="quantization_config" in config,
        compute_dtype=compute_dtype, gradient_checkpointing=gradient_checkpointing, lora_dropout=lora_dropout,
        device_type=device_type)


def estimate_from_recipe(recipe: dict, model_config: str | Path | ModelShape | None = None) -> tuple[str, MemoryEstimate]:
    """The estimate for a pipeline recipe (a Dagster run config as in configs/*.yaml) on a GPU.

    The shape comes from `model_config` (a shape, a config.json or its folder) when given, else from `KNOWN_SHAPES` by the
    recipe's `resources.base_model.config.model_id`. Returns (model id, estimate); raises KeyError naming the id
    when its shape is unknown.
    """
    from ..train.spec import TrainSpec

    model_id = (recipe.get("resources", {}).get("base_model", {}).get("config", {}) or {}).get("model_id", "?")
    ops = recipe.get("ops", {})
    train = ops.get("qlora_adapter", {}).get("config") or {}

    def setting(name: str):  # the recipe's value or TrainSpec's default (no whole-spec validation: a length is not needed)
        return train.get(name, TrainSpec.model_fields[name].default)

    seq_len = (ops.get("training_dataset", {}).get("config") or {}).get("max_seq_len", 512)
    quant = ops.get("quantized_base_model", {}).get("config") or {}
    compute = quant.get("compute_dtype", "auto")
    if isinstance(model_config, ModelShape):
        shape = model_config
    elif model_config is not None:
        shape = ModelShape.from_config(model_config)
    elif model_id in KNOWN_SHAPES:
        shape = KNOWN_SHAPES[model_id]
    else:
        raise KeyError(f"no shape known for {model_id!r}; pass --model-config with its config.json "
                       f"(known: {', '.join(KNOWN_SHAPES)})")
    return model_id, estimate_training_memory(
        shape, setting("batch_size"), seq_len, setting("r"), compute_dtype="bfloat16" if compute == "auto" else compute,
        gradient_checkpointing=setting("gradient_checkpointing"), lora_dropout=setting("dropout") > 0, device_type="cuda")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.model.memory_estimate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a recipe (configs/*.yaml): model, batch, length, LoRA from it")
    parser.add_argument("--model-config", help="a config.json (or its folder), or a name in KNOWN_SHAPES")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--compute-dtype", default="bfloat16", choices=sorted(DTYPE_BYTES))
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(_describe(args, parser))
    except (KeyError, ValueError, OSError) as err:  # an unknown model, a bad config.json or recipe: one line
        parser.exit(2, f"error: {err.args[0] if isinstance(err, KeyError) else err}\n")


def _describe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    known = args.model_config in KNOWN_SHAPES
    if args.config:
        import yaml

        name, est = estimate_from_recipe(yaml.safe_load(args.config.read_text()) or {},
                                         KNOWN_SHAPES[args.model_config] if known else args.model_config)
        name = args.model_config or name
    elif args.model_config:
        name = args.model_config
        shape = KNOWN_SHAPES[name] if known else ModelShape.from_config(name)
        est = estimate_training_memory(shape, args.batch_size, args.seq_len, args.r, compute_dtype=args.compute_dtype,
                                       gradient_checkpointing=not args.no_gradient_checkpointing)
    else:
        parser.error("give --config or --model-config")
    return f"{name}: {est.describe()} (GPU, ops/model/memory_estimate.py)"


if __name__ == "__main__":
    main()
