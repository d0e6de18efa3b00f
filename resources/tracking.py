"""MLflow tracking and registry. Credentials come from MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Optional
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg
from pydantic import Field, field_validator

from ops.core.paths import default_tracking_uri

if TYPE_CHECKING:  # ops.registry.tracking imports MLflow: loaded by the steps that talk to it (in target())
    from ops.registry.tracking import MlflowTarget


class MLflowResource(dg.ConfigurableResource):
    """Tracking and registry URIs; the embedded default is a sqlite database under the data home."""

    experiment: str = Field("qlora", description="MLflow experiment that holds one run per trained adapter.")
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI; default sqlite under $QLORA_HOME.")
    registry_uri: Optional[str] = Field(None, description="Model registry URI; default: the tracking URI.")
    artifact_location: Optional[str] = Field(
        None, description="Artifact root for new experiments; default: next to a sqlite database, else the server's choice."
    )
    ui_url: Optional[str] = Field(
        None, description="Where the MLflow UI serves this tracking store (e.g. http://127.0.0.1:5000 for `mlflow ui` "
                          "on the embedded sqlite database), for links from the assets; default: $MLFLOW_UI_URL, "
                          "else an http(s) tracking URI itself, else no links.")

    @field_validator("ui_url")
    @classmethod
    def _ui_url(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname):
            raise ValueError(f"ui_url must be an http(s) address such as http://127.0.0.1:5000, got {v!r}")
        return v

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri()

    def target(self) -> MlflowTarget:
        """Where the ops send runs and versions."""
        from ops.registry.tracking import MlflowTarget

        return MlflowTarget(self.resolved_tracking_uri(), self.resolved_registry_uri(), self.experiment,
                            self.artifact_location)

    def resolved_ui_url(self) -> Optional[str]:
        """The MLflow UI's address without credentials or a trailing slash: `ui_url`, $MLFLOW_UI_URL, or an http(s)
        tracking URI (a tracking server serves its own UI); None when none is known (a sqlite or file store)."""
        url = self.ui_url or os.environ.get("MLFLOW_UI_URL") or self.resolved_tracking_uri()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")  # user:password@ never goes into a link
        return urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/")

    def run_url(self, run_id: Optional[str], log: Callable[[str], object] = print) -> Optional[str]:
        """The MLflow UI page of run `run_id` (`#/experiments/<id>/runs/<run_id>`, the experiment read from the
        tracking store), or None without a UI address or a run id, or when the run cannot be read (logged: a
        link is not worth failing a step for)."""
        ui = self.resolved_ui_url()
        if not ui or not run_id:
            return None
        try:
            from mlflow.tracking import MlflowClient

            experiment_id = MlflowClient(self.resolved_tracking_uri()).get_run(run_id).info.experiment_id
        except Exception as e:  # noqa: BLE001  (any tracking failure only costs the link)
            log(f"no MLflow link for run {run_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return None
        return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, model_name: str, version: int | str) -> Optional[str]:
        """The MLflow UI page of a registered model version (`#/models/<name>/versions/<version>`), or None without
        a UI address."""
        ui = self.resolved_ui_url()
        return f"{ui}/#/models/{quote(model_name, safe='')}/versions/{version}" if ui else None
