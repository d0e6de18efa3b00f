"""Hands artifact references (path + fingerprint) from one asset to the next, across runs and processes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from ops.paths import artifacts_dir
from ops.store import ArtifactRef


class ArtifactRefIOManager(dg.ConfigurableIOManager):
    """Stores each asset's latest `ArtifactRef` as `<root>/refs/<asset>.json`; the artifact itself is in the store."""

    root: Optional[str] = Field(None, description="Store root; default $QLORA_HOME/artifacts.")

    def _ref_path(self, asset: str) -> Path:
        return Path(self.root or artifacts_dir()) / "refs" / f"{asset}.json"

    def handle_output(self, context: dg.OutputContext, obj: ArtifactRef) -> None:
        path = self._ref_path(context.asset_key.to_user_string())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(obj.to_json())
        tmp.replace(path)

    def load_input(self, context: dg.InputContext) -> ArtifactRef:
        asset = context.asset_key.to_user_string()
        path = self._ref_path(asset)
        if not path.is_file():
            raise FileNotFoundError(f"asset {asset} has not been materialized yet ({path} is missing); materialize it first")
        ref = ArtifactRef.from_json(path.read_text())
        if not Path(ref.path).is_dir():
            raise FileNotFoundError(f"asset {asset}'s artifact {ref.path} is gone; materialize {asset} again")
        return ref
