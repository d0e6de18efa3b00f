"""Shared fixtures for the ops tests: the embedded tokenizer, built once per session.

Imports inside the fixture: a conftest's module-level imports load for every test below it, and the unit tests
that need no model must not pay for torch and transformers (seconds per process on two cores).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded base's tokenizer (byte-level BPE with bos, eos and a chat template), without the model."""
    from ops.core.paths import BUNDLED_DATASET
    from ops.model.embedded import build_tokenizer, corpus

    return build_tokenizer(corpus(BUNDLED_DATASET), 1024)
