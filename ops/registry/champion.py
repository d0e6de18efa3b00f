"""The champion gate: which registered version serves as `champion`, with every rule in this one place.

A newly registered version becomes `champion` only when it beats the current champion on the primary metric
by at least `min_improvement` (or when there is no champion yet); otherwise it becomes `challenger`. The
decision and the numbers behind it are written to the version's tags, so the registry shows why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Optional

from ..evaluation.report import improvement, lower_is_better
from .aliases import check_alias
from .sqlite_registry import NotReadable, VersionRow, alias_holder, run_metric

if TYPE_CHECKING:  # MLflow is imported where a client is used: the champion check may read sqlite without it
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION, CHALLENGER, SKIPPED = "champion", "challenger", "skipped"
VALUE_TAG = "gate_candidate_value"


@dataclass(frozen=True)
class GateDecision:
    decision: str  # champion, challenger, skipped (no such metric), or manual:<alias> for a promotion by hand
    metric: str
    candidate_value: Optional[float]
    champion_value: Optional[float]
    champion_version: Optional[str]
    reason: str

    def tags(self) -> dict[str, str]:
        return {f"gate_{k}": "" if v is None else str(v) for k, v in asdict(self).items()}


def decide(metric: str, candidate: float, champion: Optional[float], champion_version: Optional[str],
           min_improvement: float = 0.0) -> GateDecision:
    """Champion when there is none or the candidate beats it by at least `min_improvement`; else challenger."""
    if champion_version is None:
        return GateDecision(CHAMPION, metric, candidate, None, None, "no champion yet")
    if champion is None:
        return GateDecision(CHAMPION, metric, candidate, None, champion_version,
                            f"champion version {champion_version} has no {metric}")
    gain = improvement(metric, candidate, champion)
    won = gain >= min_improvement if min_improvement > 0 else gain > 0
    verdict = CHAMPION if won else CHALLENGER
    direction = "lower" if lower_is_better(metric) else "higher"
    return GateDecision(verdict, metric, candidate, champion, champion_version,
                        f"{metric} {candidate:.6g} vs champion {champion:.6g} ({direction} is better, "
                        f"improvement {gain:.6g}, required {'>=' if min_improvement > 0 else '>'} {min_improvement:g})")


def current_champion(client: MlflowClient, name: str) -> Optional[ModelVersion]:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such alias (or model) yet
        return None


def gated_value(tags: dict[str, str], metric: str) -> Optional[float]:
    """The value a version was gated with, when it was gated on `metric` (its tags), else None."""
    if tags.get(VALUE_TAG) and tags.get("gate_metric") == metric:
        return float(tags[VALUE_TAG])
    return None


def version_metric(client: MlflowClient, version: ModelVersion, metric: str) -> Optional[float]:
    """The metric a version was gated on (its tag), else what its MLflow run logged."""
    if (gated := gated_value(version.tags, metric)) is not None:
        return gated
    if version.run_id:
        value = client.get_run(version.run_id).data.metrics.get(metric)
        return None if value is None else float(value)
    return None


def champion_value(client: MlflowClient, name: str, metric: str) -> tuple[Optional[str], Optional[float]]:
    """(version, value on `metric`) of the current champion, or (None, None) when there is none."""
    champion = current_champion(client, name)
    if champion is None:
        return None, None
    return str(champion.version), version_metric(client, champion, metric)


def read_champion(tracking_uri: str, registry_uri: str, name: str,
                  metric: str) -> tuple[Optional[str], Optional[float]]:
    """`champion_value` for these URIs, read from the embedded sqlite registry without importing MLflow when it
    can answer (a fully cached rerun's regression check), else through MLflow's client.

    Returns:
        (champion version, its value on `metric`), or (None, None) when there is no champion.
    Raises:
        MlflowException: as `champion_value` (e.g. the champion's run is gone).
    """
    try:
        champion: Optional[VersionRow] = alias_holder(registry_uri, name, CHAMPION)
        if champion is None:
            return None, None
        if (gated := gated_value(champion.tags, metric)) is not None or not champion.run_id:
            return str(champion.version), gated
        return str(champion.version), run_metric(tracking_uri, champion.run_id, metric)
    except NotReadable:
        from mlflow import MlflowClient

        return champion_value(MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri), name, metric)


def _record(client: MlflowClient, name: str, version: str | int, decision: GateDecision, keep: tuple = ()) -> None:
    for key, tag in decision.tags().items():
        if key not in keep:
            client.set_model_version_tag(name, str(version), key, tag)


def apply_gate(client: MlflowClient, name: str, version: str | int, metric: str, metrics: dict[str, float],
               min_improvement: float = 0.0, log: Callable[[str], None] = print) -> GateDecision:
    """Decide champion or challenger for a freshly registered `version`, set that alias, and tag the version."""
    held_by, value = champion_value(client, name, metric)
    if metric not in metrics:  # nothing to judge on: leave champion and challenger where they are
        decision = GateDecision(SKIPPED, metric, None, value, held_by, f"no {metric} among the metrics")
        _record(client, name, version, decision)
        log(f"gate: {name} version {version} not gated ({decision.reason})")
        return decision
    decision = decide(metric, metrics[metric], value, held_by, min_improvement)
    _record(client, name, version, decision)
    client.set_registered_model_alias(name, decision.decision, str(version))
    log(f"gate: {name} version {version} -> {decision.decision} ({decision.reason})")
    return decision


def promote(client: MlflowClient, name: str, version: str | int, alias: str,
            log: Callable[[str], None] = print) -> GateDecision:
    """Point `alias` at `version` by hand (a promotion or a rollback), recording who held it before on the version."""
    from mlflow.exceptions import MlflowException

    check_alias(alias)
    target = client.get_model_version(name, str(version))  # raises when the version does not exist
    try:
        before: Optional[str] = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        before = None
    metric = target.tags.get("gate_metric", "")
    decision = GateDecision(f"manual:{alias}", metric, version_metric(client, target, metric) if metric else None,
                            None, before, f"set by hand; {alias!r} was on version {before}")
    _record(client, name, target.version, decision, keep=(VALUE_TAG,))  # keep the value it was gated with
    client.set_registered_model_alias(name, alias, target.version)
    log(f"{name}: alias {alias!r} moved from version {before} to {target.version}")
    return decision
