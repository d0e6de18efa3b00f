"""The artifact store: content-addressed folders under the data home."""

from __future__ import annotations

from typing import Optional

import dagster as dg
from pydantic import Field

from ops.core.paths import artifacts_dir
from ops.core.store import ArtifactStore


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where step artifacts live: `<root>/<asset>/<fingerprint>/`."""

    root: Optional[str] = Field(None, description="Store root; default $QLORA_HOME/artifacts.")

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root or artifacts_dir())
