"""The base model every step shares: the embedded default, a local directory, or a hub id."""

from __future__ import annotations

from typing import Optional

import dagster as dg
from pydantic import Field

from ops.model.base_resolution import ResolvedBase, resolve_base
from ops.model.embedded import EMBEDDED_ID


class BaseModelResource(dg.ConfigurableResource):
    """Which base model to fine-tune. Hub access uses huggingface_hub's own HF_TOKEN variable."""

    model_id: str = Field(EMBEDDED_ID, description="Hub id, local directory, or 'embedded:tiny-llama' (built locally).")
    revision: Optional[str] = Field(None, description="Hub revision (a commit sha pins it); recorded in lineage.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run (off: only trusted code).")
    allow_pickle_weights: bool = Field(False, description="Accept .bin (pickle) weights in a local directory.")

    def resolve(self) -> ResolvedBase:
        return resolve_base(self.model_id, self.revision, self.allow_pickle_weights, trust_remote_code=self.trust_remote_code)
