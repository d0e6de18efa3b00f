"""The MLflow pyfunc model that serves a registered adapter: 4-bit base + LoRA adapter + the training prompt format.

MLflow logs this file as "models from code" (no pickle): loading the model runs this file, whose last line
hands MLflow an `AdapterGenerator`. The project's `ops` package travels with the model (`code_paths`), so the
`ops.*` imports below resolve in a fresh process that has only the dependencies installed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from ops.device import resolve_device
from ops.fingerprint import verify_checksums
from ops.generation import generate
from ops.modeling import device_map, load_adapter_model, load_tokenizer
from ops.prompting import render_user_prompt

MODEL_CODE = Path(__file__).resolve()
OPS_DIR = MODEL_CODE.parent
DEFAULT_MAX_NEW_TOKENS = 32
DEFAULT_BATCH_SIZE = 8  # prompts per generate() call: bounds padding waste and activation memory
# (input, params): MLflow predicts on it when logging, and 4 tokens keep that check quick.
INPUT_EXAMPLE = (["Give the first word.\nquick brown fox"], {"max_new_tokens": 4})
# What serving needs; pinned to this environment so the logged model states what it was tested with.
RUNTIME_PACKAGES = ("mlflow", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors",
                    "tokenizers", "pandas")


class AdapterGenerator(mlflow.pyfunc.PythonModel):
    """Greedy generation from the 4-bit base with the LoRA adapter, prompts rendered as in training."""

    def load_context(self, context) -> None:
        """Load base, adapter and tokenizer from the model's artifacts onto the best local device."""
        self.device = resolve_device()
        config = context.model_config or {}
        self.prompt_format = config.get("prompt_format", "text")
        if "adapter_sha256" in config:
            verify_checksums(Path(context.artifacts["adapter"]), config["adapter_sha256"], "adapter files")
        if "base_model" in context.artifacts:
            self.tokenizer = load_tokenizer(context.artifacts["base_model"], padding_side="left")
            self.model = load_adapter_model(context.artifacts["base_model"], context.artifacts["adapter"], self.device)
        else:  # logged without the base: fetch it from the hub and quantize it as in training
            self.tokenizer, self.model = load_hub_adapter_model(config, context.artifacts["adapter"], self.device)

    # Typed as DataFrame because pyfunc always hands one over after enforcing the signature (a list or a
    # string becomes one unnamed column); MLflow skips its type-hint validation for DataFrame hints.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        """Generate a completion for each prompt (a DataFrame column; lists and strings work when called directly)."""
        params = params or {}
        prompts = [render_user_prompt(p, self.prompt_format, self.tokenizer) for p in as_prompts(model_input)]
        return generate(
            self.model, self.tokenizer, prompts,
            max_new_tokens=int(params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            batch_size=int(params.get("batch_size", DEFAULT_BATCH_SIZE)),
        )


def load_hub_adapter_model(config: dict[str, Any], adapter_dir: str, device) -> tuple[Any, Any]:
    """Tokenizer and 4-bit base + adapter for a model logged with a hub id, revision and quantization config."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model_id, revision = config["base_model_id"], config.get("base_model_revision")
    bnb = BitsAndBytesConfig.from_dict({**config["quantization_config"], "bnb_4bit_compute_dtype": device.dtype_name})
    base = AutoModelForCausalLM.from_pretrained(model_id, revision=revision, quantization_config=bnb,
                                                device_map=device_map(device), dtype=device.compute_dtype)
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    return load_tokenizer(model_id, revision=revision, padding_side="left"), model


def as_prompts(model_input: Any) -> list[str]:
    """Normalise what pyfunc may pass (DataFrame, Series, list, str) to a list of prompt strings."""
    if isinstance(model_input, pd.DataFrame):
        # With the signature below MLflow hands over a DataFrame: a `prompt` column, or one unnamed column.
        column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        return [str(p) for p in model_input[column].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(p) for p in model_input.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [str(p) for p in model_input]


def signature() -> ModelSignature:
    """Strings in, strings out; generation settings as params so callers can change them per request."""
    # An unnamed string column accepts a list of strings, one string, or a DataFrame with a `prompt` column.
    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([
            ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS),
            ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE),
        ]),
    )


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment (given explicitly: inferring them reloads the model)."""
    reqs = []
    for name in RUNTIME_PACKAGES:
        try:
            # Drop local labels such as "+cpu" so a GPU host can install the matching CUDA build.
            reqs.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


mlflow.models.set_model(AdapterGenerator())
