"""What each torchrun rank runs: `-m ops.train.pipes_entry --job launch.json` (see ops/train/launch.py).

The one module of ops/ that imports Dagster, and only `dagster_pipes`, the light client: rank 0, when Dagster
started it, sends its progress lines to the step's run log through Pipes and gets the MLflow run from it. The other
ranks, and a rank 0 started by hand, talk to no one. `@record` writes a failed rank's exception to torchrun's error
file, which the launcher turns into the step's one-line error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
from torch.distributed.elastic.multiprocessing.errors import record

from ..core.progress import bars_to
from .distributed import rank_info
from .launch import TrainJob
from .procs import die_with_parent
from .worker import train_rank

MLFLOW_EXTRAS = ("mlflow_tracking_uri", "mlflow_run_id")  # what the qlora_adapter step passes rank 0


@record
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.train.pipes_entry")
    parser.add_argument("--job", type=Path, required=True)
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)  # torchrun starts ranks in sessions of their own: a killed torchrun takes them too
    job, ranks = TrainJob.read(args.job), rank_info()
    if not (ranks.is_main and PipesEnvVarParamsLoader().is_dagster_pipes_process()):
        train_rank(job, ranks, print, lambda line: print(line, file=sys.stderr))
        return
    with open_dagster_pipes() as pipes, ExitStack() as stack:
        extras = pipes.extras
        run = tuple(extras[k] for k in MLFLOW_EXTRAS) if all(extras.get(k) for k in MLFLOW_EXTRAS) else None
        if extras.get("progress_tty"):  # the runner's terminal (ops.train.launch.terminal_name): the bar goes there
            stack.enter_context(bars_to(stack.enter_context(open(extras["progress_tty"], "w", buffering=1))))
        train_rank(job, ranks, pipes.log.info, pipes.log.warning, run)


if __name__ == "__main__":
    main()  # a failure raises out of here, through @record, with its traceback
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # done and saved: skip the interpreter shutdown of torch and its threads (seconds under load)
