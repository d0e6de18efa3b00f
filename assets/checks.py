"""Asset checks: bad data stops the run before training, an adapter that does not help stops registration."""


from pathlib import Path

import dagster as dg
from pydantic import Field

from ops.core.check_outcome import CheckOutcome
from ops.core.code_version import PACKAGE_DIR, code_version
from ops.core.fingerprint import fingerprint
from ops.core.store import ArtifactRef, StepSummary, materialize, read_result
from ops.data.spec import DatasetSummary
from ops.evaluation import checks as evaluation_checks
from ops.evaluation.report import EvaluationReport
from resources import ArtifactStoreResource, MLflowResource, RegisteredModelResource

DATASET = dg.AssetKey("training_dataset")
EVALUATION = dg.AssetKey("adapter_evaluation")
# The data checks' outcomes are a function of the dataset and the bounds, so they are cached like a step: a
# rerun on a cached dataset reads them back instead of loading the `datasets` library and the splits.
DATA_CHECKS_VERSION = code_version([PACKAGE_DIR / "data" / "checks.py", PACKAGE_DIR / "data" / "preparation.py"],
                                   ("datasets",))


class DataCheckOutcomes(StepSummary):
    outcomes: dict[str, CheckOutcome]  # check name -> outcome, in the order the checks ran


class DataChecksConfig(dg.Config):
    max_truncated_share: float = Field(0.1, description="Largest share of examples allowed to be cut at max_seq_len.")
    min_train_rows: int = Field(32, description="Fewest training examples worth a fine-tuning run.")
    min_eval_rows: int = Field(4, description="Fewest held-out examples for an evaluation worth trusting.")


def _result(asset: dg.AssetKey, name: str, outcome: CheckOutcome,
            severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=asset, check_name=name, passed=outcome.passed, severity=severity,
                               description=outcome.description, metadata={"why": outcome.description, **outcome.metadata})


# One op for the four data checks: each check step is a process in `dagster dev`, and these share one load.
@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("no_empty_text", asset=DATASET, blocking=True, description="No empty prompt or response."),
        dg.AssetCheckSpec("truncation_bounded", asset=DATASET, blocking=True,
                          description="Share of truncated examples under the configured bound."),
        dg.AssetCheckSpec("splits_disjoint", asset=DATASET, blocking=True, description="No example in both train and eval."),
        dg.AssetCheckSpec("enough_rows", asset=DATASET, blocking=True, description="Enough train and eval rows."),
    ],
)
def training_dataset_checks(context: dg.AssetCheckExecutionContext, config: DataChecksConfig,
                            training_dataset: ArtifactRef, store: ArtifactStoreResource):
    """Blocking data checks: a failure stops the run before the adapter is trained."""
    fp = fingerprint(DATA_CHECKS_VERSION, config.model_dump(), {"dataset": training_dataset.fingerprint})

    def work(tmp) -> DataCheckOutcomes:
        from ops.data import checks as data_checks  # here, not at the top: they load the `datasets` library
        from ops.data.preparation import load_prepared

        splits, summary = load_prepared(Path(training_dataset.path)), read_result(training_dataset, DatasetSummary)
        return DataCheckOutcomes(outcomes={
            "no_empty_text": data_checks.no_empty_text(splits, summary.format),
            "truncation_bounded": data_checks.truncation_within(summary, config.max_truncated_share),
            "splits_disjoint": data_checks.splits_disjoint(splits),
            "enough_rows": data_checks.enough_rows(splits, config.min_train_rows, config.min_eval_rows)})

    result = materialize(store.store(), "training_dataset_checks", fp, work, DataCheckOutcomes, log=context.log.info,
                         config=config.model_dump())
    for name, outcome in result.summary.outcomes.items():
        yield _result(DATASET, name, outcome)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("beats_base", asset=EVALUATION, blocking=True,
                          description="The adapter lowers the base model's held-out loss."),
        dg.AssetCheckSpec("no_regression_vs_champion", asset=EVALUATION,
                          description="The adapter is no worse than the champion on the primary metric (warning)."),
    ],
)
def adapter_evaluation_checks(adapter_evaluation: ArtifactRef, mlflow: MLflowResource,
                              registered_model: RegisteredModelResource):
    """A failed beats_base blocks registration; a regression against the champion only warns."""
    report = read_result(adapter_evaluation, EvaluationReport)
    yield _result(EVALUATION, "beats_base", evaluation_checks.beats_base(report))
    # Reads an embedded registry without importing MLflow (seconds); other registries through MLflow's client.
    from ops.registry.champion import read_champion

    gate = registered_model.gate()  # the same model and metric registered_adapter's gate uses
    version, value = read_champion(mlflow.resolved_tracking_uri(), mlflow.resolved_registry_uri(), gate.model_name,
                                   gate.primary_metric)
    yield _result(EVALUATION, "no_regression_vs_champion",
                  evaluation_checks.no_regression(report, gate.primary_metric, value, version), dg.AssetCheckSeverity.WARN)


ASSET_CHECKS = [training_dataset_checks, adapter_evaluation_checks]
