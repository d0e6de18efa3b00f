"""The MLflow pyfunc model that serves a registered adapter: 4-bit base + LoRA adapter + the training prompt format.

MLflow logs it as "models from code" (no pickle). At log time the modules this file needs are copied into a
package of their own, `qlora_model_<hash>` (ops/serving/packaging.py), and a generated two-line stub hands MLflow an
`AdapterGenerator` from there; so the imports below are relative, and a loaded model runs the code it was
logged with, beside any host application's packages.

Requests carry the fields of the training format (ops/prompting.render_request): alpaca `instruction` (or
`prompt`) and optional `input`; chat `prompt` with an optional `system`, or whole `messages`; otherwise `prompt`.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array, Object, Property

from ..core.fingerprint import ChecksumMismatch, verify_checksums
from ..data.prompt_formats import REQUEST_FIELDS, render_request
from ..model.cpu_kernels import guard_packed_kernel, named_kernel_errors
from ..model.device import resolve_device
from ..model.generation import generate
from ..model.loading import device_map, load_adapter_model, load_tokenizer

DEFAULT_MAX_NEW_TOKENS = 32
DEFAULT_BATCH_SIZE = 8  # prompts per generate() call: bounds padding waste and activation memory
# What serving needs; pinned to this environment so the logged model states what it was tested with.
RUNTIME_PACKAGES = ("mlflow", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors",
                    "tokenizers", "pandas")
CHECKSUMS_ARTIFACT = "adapter_checksums"  # the model artifact holding {adapter file: sha256}
CHECKSUMS_DIGEST_KEY = "adapter_checksums_sha256"  # model_config key: sha256 of that JSON file


class AdapterGenerator(mlflow.pyfunc.PythonModel):
    """Greedy generation from the 4-bit base with the LoRA adapter, prompts rendered as in training."""

    def load_context(self, context) -> None:
        """Verify the adapter files, then load base, adapter and tokenizer onto the best local device."""
        self.device = resolve_device()
        config = context.model_config or {}
        self.prompt_format = config.get("prompt_format", "text")
        self.system_message = config.get("system_message")  # the training data's one system message, if any
        verify_adapter(context.artifacts, config)
        if "base_model" in context.artifacts:
            self.tokenizer = load_tokenizer(context.artifacts["base_model"], padding_side="left")
            self.model = load_adapter_model(context.artifacts["base_model"], context.artifacts["adapter"], self.device)
        else:  # logged without the base: fetch it from the hub and quantize it as in training
            self.tokenizer, self.model = load_hub_adapter_model(config, context.artifacts["adapter"], self.device)

    # Typed as DataFrame because pyfunc hands one over after enforcing the signature; MLflow skips its
    # type-hint validation for DataFrame hints.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        """Generate a completion per request row (DataFrame rows; records, dicts and strings work when called directly)."""
        params = params or {}
        prompts = []
        for n, request in enumerate(as_requests(model_input), 1):
            try:
                prompts.append(render_request(request, self.prompt_format, self.tokenizer, self.system_message))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"request {n}: {err}") from None
        with named_kernel_errors("predict", self.model):
            return generate(
                self.model, self.tokenizer, prompts,
                max_new_tokens=int(params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                batch_size=int(params.get("batch_size", DEFAULT_BATCH_SIZE)),
            )


def checksums_digest(path: str | Path) -> str:
    """sha256 (hex) of the checksums file's bytes: what the model config records, and the version tag's prefix."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_adapter(artifacts: dict[str, str], config: dict[str, Any]) -> None:
    """Refuse adapter files that differ from those registered: the checksums file must match the digest in the
    model config, and the adapter files the checksums in it (raises fingerprint.ChecksumMismatch)."""
    if CHECKSUMS_DIGEST_KEY not in config:
        return
    path = Path(artifacts[CHECKSUMS_ARTIFACT])
    if checksums_digest(path) != config[CHECKSUMS_DIGEST_KEY]:
        raise ChecksumMismatch(f"{path} does not match the digest in the model config; refusing to load a "
                               "tampered or corrupted model")
    verify_checksums(Path(artifacts["adapter"]), json.loads(path.read_text()), "adapter files")


def load_hub_adapter_model(config: dict[str, Any], adapter_dir: str, device) -> tuple[Any, Any]:
    """Tokenizer and 4-bit base + adapter for a model logged with a hub id, revision and quantization config."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model_id, revision = config["base_model_id"], config.get("base_model_revision")
    bnb = BitsAndBytesConfig.from_dict({**config["quantization_config"], "bnb_4bit_compute_dtype": device.dtype_name})
    base = AutoModelForCausalLM.from_pretrained(model_id, revision=revision, quantization_config=bnb,
                                                device_map=device_map(device), dtype=device.compute_dtype)
    guard_packed_kernel(base)  # as for every 4-bit model loaded on a CPU (ops/model/cpu_kernels.py)
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    return load_tokenizer(model_id, revision=revision, padding_side="left"), model


def as_requests(model_input: Any) -> list[dict[str, Any]]:
    """Normalise what pyfunc may pass (DataFrame, records, a dict of columns, strings) to one dict per request.

    Raises:
        ValueError: the input has none of the request fields; MLflow drops columns the signature does not
            name, so a plain list of strings arrives as a frame without columns.
    """
    if isinstance(model_input, str):
        return [{"prompt": model_input}]
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input if _columns(model_input) else [model_input])
    if isinstance(model_input, pd.Series):
        model_input = model_input.to_frame(model_input.name if model_input.name in REQUEST_FIELDS else "prompt")
    if isinstance(model_input, pd.DataFrame):
        known = [c for c in model_input.columns if c in REQUEST_FIELDS]
        if not known:
            raise ValueError(f"the request has none of the fields {', '.join(REQUEST_FIELDS)} (got columns "
                             f"{list(model_input.columns)}); send records such as "
                             '[{"instruction": "...", "input": "..."}] or [{"prompt": "..."}]')
        return model_input[known].to_dict("records")
    return [{"prompt": item} if isinstance(item, str) else dict(item) for item in model_input]


def _columns(mapping: dict) -> bool:
    """Whether a dict holds columns (a list of values per field) rather than one request's fields."""
    listed = (list, tuple, pd.Series)
    if not all(isinstance(v, listed) for v in mapping.values()):
        return False
    return all(isinstance(m, listed) for m in mapping.get("messages", []))  # a column of conversations


def signature() -> ModelSignature:
    """Named, optional request fields in, strings out; generation settings as params changeable per request."""
    message = Object([Property("role", "string"), Property("content", "string")])
    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt", required=False),
                       ColSpec("string", "instruction", required=False),
                       ColSpec("string", "input", required=False),
                       ColSpec("string", "system", required=False),
                       ColSpec(Array(message), "messages", required=False)]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([
            ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS),
            ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE),
        ]),
    )


def input_example(prompt_format: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """(input, params) in the fields of `prompt_format`: MLflow predicts on it at log time, shows it on the
    model page and stores it as the serving example; 4 new tokens keep that check quick."""
    if prompt_format == "alpaca":
        request = {"instruction": "Give the first word.", "input": "quick brown fox"}
    else:
        request = {"prompt": "Give the first word of: quick brown fox"}
    return pd.DataFrame([request]), {"max_new_tokens": 4}


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
