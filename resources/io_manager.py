"""Hands artifact references (path + fingerprint) from one asset to the next, across runs and processes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from ops.core.atomic import write_text_atomic
from ops.core.paths import artifacts_dir
from ops.core.store import ArtifactRef


class ArtifactRefIOManager(dg.ConfigurableIOManager):
    """Stores each asset's `ArtifactRef` as `<root>/refs/<asset>.json` (the latest) and under the run that made
    it; the artifact itself is in the store. A step reads what its own run made, so two runs at once with
    different configs cannot hand each other their adapters; an asset not made in this run is read as the latest."""

    root: Optional[str] = Field(None, description="Store root; default $QLORA_HOME/artifacts.")

    def _ref_path(self, asset: str, run_id: str | None = None) -> Path:
        root = Path(self.root or artifacts_dir())
        return (root / "run-refs" / run_id if run_id else root / "refs") / f"{asset}.json"

    def handle_output(self, context: dg.OutputContext, obj: ArtifactRef) -> None:
        asset = context.asset_key.to_user_string()
        for path in (self._ref_path(asset, context.run_id), self._ref_path(asset)):
            write_text_atomic(path, obj.to_json())

    def load_input(self, context: dg.InputContext) -> ArtifactRef:
        asset = context.asset_key.to_user_string()
        try:
            own = self._ref_path(asset, context.step_context.run_id)
        except dg.DagsterInvariantViolationError:  # a context built outside a run (tests, tools)
            own = None
        path = own if own is not None and own.is_file() else self._ref_path(asset)
        if not path.is_file():
            raise FileNotFoundError(f"asset {asset} has not been materialized yet ({path} is missing); materialize it first")
        ref = ArtifactRef.from_json(path.read_text())
        if not Path(ref.path).is_dir():
            raise FileNotFoundError(f"asset {asset}'s artifact {ref.path} is gone; materialize {asset} again")
        return ref
