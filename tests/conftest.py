"""Fixtures shared by every test: an isolated data home and a tiny real model chain (base, 4-bit, data, adapter).

Everything is real (bitsandbytes quantization, PEFT training, MLflow on sqlite), only small: a 2-layer,
64-wide Llama and a couple hundred rows, so the whole chain builds in seconds on two CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import TINY_ARCH, TINY_RECIPE

# Hubs are unreachable here; fail fast instead of retrying DNS for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Tiny models gain nothing from intra-op threads, and on two cores shared with other processes OpenMP's
# spin-waiting made a 4-step training run 15x slower (13 s against 0.9 s). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")



@pytest.fixture(autouse=True)
def qlora_home(tmp_path, monkeypatch) -> Path:
    """Each test writes into its own data home, never into the repository's .qlora/."""
    home = tmp_path / "qlora-home"
    monkeypatch.setenv("QLORA_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("QLORA_INSTANCE", raising=False)  # a shell's shared instance (deploy/dagster.yaml) is not the tests'
    return home


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A tiny seeded Llama with the embedded tokenizer, saved like a hub checkpoint (safetensors)."""
    from ops.model.embedded import build_embedded_base

    return build_embedded_base(tmp_path_factory.mktemp("tiny-base"), arch=TINY_ARCH)


@pytest.fixture(scope="session")
def cpu():
    from ops.model.device import resolve_device

    return resolve_device()


@pytest.fixture(scope="session")
def tiny_quantized(tiny_base_dir, cpu, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny base quantized to NF4 with double quantization: (artifact dir with model/, summary)."""
    from ops.model.base_resolution import resolve_base
    from ops.model.quantize import quantize_base
    from ops.model.spec import QuantSpec

    out = tmp_path_factory.mktemp("tiny-quantized")
    summary = quantize_base(resolve_base(str(tiny_base_dir)), QuantSpec(), cpu, out, log=lambda _: None)
    return out, summary


@pytest.fixture(scope="session")
def tiny_dataset(tiny_quantized, tmp_path_factory) -> tuple[Path, dict]:
    """200 bundled rows prepared with the tiny model's tokenizer: (artifact dir, stats)."""
    from ops.data.preparation import prepare_dataset
    from ops.data.spec import DataSpec
    from ops.model.loading import load_tokenizer

    out = tmp_path_factory.mktemp("tiny-dataset")
    tokenizer = load_tokenizer(tiny_quantized[0] / "model")
    stats = prepare_dataset(DataSpec(max_rows=200, max_seq_len=64), tokenizer, out, log=lambda _: None)
    return out, stats


@pytest.fixture(scope="session")
def tiny_adapter(tiny_quantized, tiny_dataset, cpu, tmp_path_factory) -> tuple[Path, dict]:
    """A LoRA adapter trained for a few real steps: (artifact dir with adapter/, summary)."""
    from ops.train.spec import TrainSpec
    from ops.train.trainer import train_adapter

    out = tmp_path_factory.mktemp("tiny-adapter")
    spec = TrainSpec(max_steps=4, batch_size=8, save_steps=2, logging_steps=1, warmup_steps=1, **TINY_RECIPE)
    summary = train_adapter(tiny_quantized[0] / "model", tiny_dataset[0], out, spec, cpu, log=lambda _: None)
    return out, summary
