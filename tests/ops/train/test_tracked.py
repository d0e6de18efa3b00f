"""Training with its MLflow run (a real sqlite store): the run ends FINISHED with what training decided, or FAILED."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from ops.data.sources import DataError
from ops.registry.tracking import MlflowTarget
from ops.train.spec import TrainSpec
from ops.train.tracked import train_tracked
from tests.tiny import TINY_RECIPE

pytestmark = pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU:UserWarning")


def test_a_trained_run_is_finished_and_tagged_and_a_failed_one_is_failed(tiny_quantized, tiny_dataset, cpu, tmp_path):
    target = MlflowTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}", "tracked",
                          (tmp_path / "artifacts").as_uri())
    spec = TrainSpec(max_steps=2, batch_size=8, logging_steps=1, save_steps=2, eval_steps=2, **TINY_RECIPE)
    common = dict(fingerprint="f" * 16, inputs={"dataset": "d" * 16}, dagster_run_id="run-1", log=lambda _: None)
    result = train_tracked(tiny_quantized[0] / "model", tiny_dataset[0], tmp_path / "out", spec, cpu,
                           checkpoint_dir=tmp_path / "ckpt", target=target, **common)
    client = MlflowClient(target.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"  # not left RUNNING when a later step (a check, registration) fails
    assert (run.data.tags["steps"], run.data.tags["stopped_early"], run.data.tags["best_step"]) == ("2", "false", "2")
    assert run.info.run_name == "r16-lr0.001-2steps-alpha=32-dropout=0.05-batch_size=8-..."

    with pytest.raises(DataError):
        train_tracked(tiny_quantized[0] / "model", tmp_path / "no-dataset", tmp_path / "out2", spec, cpu,
                      checkpoint_dir=tmp_path / "ckpt2", target=target, **common)
    failed = client.get_run((tmp_path / "ckpt2" / "mlflow_run_id").read_text().strip())
    assert failed.info.status == "FAILED"
