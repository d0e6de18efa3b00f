"""Shared fixtures for the ops tests: the embedded tokenizer, built once per session."""

from __future__ import annotations

import pytest

from ops.core.paths import BUNDLED_DATASET
from ops.model.embedded import build_tokenizer, corpus


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded base's tokenizer (byte-level BPE with bos, eos and a chat template), without the model."""
    return build_tokenizer(corpus(BUNDLED_DATASET), 1024)
