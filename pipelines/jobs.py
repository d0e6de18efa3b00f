"""Jobs besides the pipeline: moving a registry alias by hand (promote or roll back) from the UI's launchpad."""


import dagster as dg
from pydantic import Field

from resources import MLflowResource


class PromoteConfig(dg.Config):
    model_name: str = Field(description="Registered model name, e.g. qlora-demo.")
    version: int = Field(description="Version the alias should point to (an older one rolls back).")
    alias: str = Field("champion", description="Alias to move: champion, challenger, candidate or your own.")


@dg.op
def promote_alias_op(context: dg.OpExecutionContext, config: PromoteConfig, mlflow: MLflowResource) -> None:
    """Point an alias at a version by hand; the version's gate tags record the move and the previous holder."""
    # No output: the project's IO manager stores asset refs, and this op produces none.
    from mlflow import MlflowClient  # here, not at the top: loading the definitions should not import MLflow

    from ops.registry.champion import promote

    client = MlflowClient(tracking_uri=mlflow.resolved_tracking_uri(), registry_uri=mlflow.resolved_registry_uri())
    promote(client, config.model_name, config.version, config.alias, log=context.log.info)


@dg.job(description="Promote or roll back a registry alias (champion by default) to a chosen version.")
def promote_alias():
    promote_alias_op()
