"""Start one machine's training processes under torchrun, and say in one line why they failed.

The qlora_adapter step runs this for machine 0 (through Dagster Pipes); each other machine of a multi-machine run
runs the command that step logs, the same paths reachable there (shared storage):

    python -m ops.train.launch --job <checkpoints>/launch.json --node-rank 1

It is `python -m torch.distributed.run` (torchrun, called in this process) with the arguments read from the job
file, plus: it dies with the process that started it (Linux), and a failed rank is summarised in one line
(`--failure-file`) instead of torchrun's multi-line report alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Optional

from pydantic import BaseModel

from .launch_spec import LaunchSpec
from .procs import die_with_parent

ENTRY_MODULE = "ops.train.pipes_entry"  # what each rank runs; the only module of ops/ that imports dagster_pipes


class TrainJob(BaseModel):
    """Everything a rank needs, written once as JSON (`launch.json` beside the checkpoints) and read by every rank on
    every machine. No secrets: the MLflow address and run reach rank 0 through Pipes, not this file."""

    model_dir: str
    dataset_dir: str
    out_dir: str  # rank 0 writes the adapter, train_summary.json and loss_curve.png here
    checkpoint_dir: str
    spec: dict  # TrainSpec fields
    require_gpu: bool = False
    compute_dtype: str = "auto"  # a torch dtype name pins it (tests compare numbers across CPU kinds); auto: the device's
    launch: LaunchSpec = LaunchSpec()
    rdzv_id: str  # the same on every machine of one run: the adapter's fingerprint

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def read(cls, path: Path) -> "TrainJob":
        return cls.model_validate_json(Path(path).read_text())


def terminal_name() -> Optional[str]:
    """The device path of the terminal this process draws progress bars on (ops.core.progress), e.g. /dev/pts/3;
    None when that is no terminal. Rank 0 draws its bar there: a child cannot inherit the runner's copy of it."""
    from ..core.progress import terminal

    try:
        stream = terminal()
        return os.ttyname(stream.fileno()) if stream.isatty() else None
    except (OSError, ValueError, AttributeError):  # a stream without a file descriptor (pytest's capture)
        return None


def launch_command(job_file: Path, node_rank: int = 0, failure_file: Optional[Path] = None) -> list[str]:
    """The command that starts machine `node_rank`'s processes (this interpreter, `-m ops.train.launch`)."""
    cmd = [sys.executable, "-m", "ops.train.launch", "--job", str(job_file), "--node-rank", str(node_rank)]
    return cmd + (["--failure-file", str(failure_file)] if failure_file else [])


def torchrun_args(job: TrainJob, job_file: Path, node_rank: int) -> list[str]:
    """torchrun's arguments for machine `node_rank` (what `python -m torch.distributed.run` takes)."""
    launch = job.launch
    common = ["--nproc-per-node", str(launch.nproc_per_node), "--max-restarts", str(launch.max_restarts),
              # a finished or failed rank is noticed within 0.1 s (an idle check, not a cost per step)
              "--monitor-interval", "0.1"]
    if launch.nnodes == 1:  # rendezvous on a free local port: two runs on one machine never collide
        where = ["--standalone"]
    else:
        # static rendezvous: machine 0 hosts the store at the endpoint and machine r's ranks are r x nproc_per_node
        # onwards, so global rank 0 (the one that talks to Dagster) is on machine 0. c10d's dynamic rendezvous
        # numbers machines in the order they join, which put rank 0 on machine 1 in a loopback test.
        where = ["--nnodes", str(launch.nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "static",
                 "--rdzv-endpoint", launch.rdzv_endpoint, "--rdzv-id", job.rdzv_id]
    return [*common, *where, "-m", ENTRY_MODULE, "--job", str(job_file)]


# torchrun stops the surviving ranks with these once one has failed: a rank ended so is seldom the cause
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def cause_rank(failure) -> int:
    """How likely a failed rank's end is the run's cause, 0 most: a kill from outside (SIGKILL: the OOM killer, a
    user), then a Python exception, then an exit code, then torchrun's own stop signal. The others fail because of
    the first (a broken connection) and may carry an earlier second than torchrun's record of a kill, which it stamps
    when it notices."""
    if failure.exitcode < 0:
        return 3 if -failure.exitcode in STOP_SIGNALS else 0
    return 1 if isinstance(failure.message, dict) else 2


# What a rank raises when another rank's process went away under it (gloo, NCCL): the broken link, not the cause
PEER_LOST = re.compile(r"Connection (reset|closed) by peer|Broken pipe|remote process exited|communicator was aborted|"
                       r"NCCL .*(Error|error).*remote", re.I)


def describe_failure(failures: dict, checkpoint_dir: Path, nnodes: int = 1) -> str:
    """One line: which rank failed first, how, and where a rerun resumes.

    Args:
        failures: `ChildFailedError.failures` (global rank -> torch's ProcessFailure).
        checkpoint_dir: the run's checkpoints.
    Returns:
        e.g. "training failed: rank 1 (pid 4242) was killed by SIGKILL; the rerun resumes from checkpoint-6".
    """
    from .checkpoints import latest_checkpoint

    rank, failure = min(failures.items(), key=lambda item: (cause_rank(item[1]), item[1].timestamp, item[0]))
    if failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
    elif isinstance(failure.message, dict) and failure.message.get("message"):  # written by @record: "Type: text"
        text = " ".join(str(failure.message["message"]).split())
        if nnodes > 1 and PEER_LOST.search(text):  # the rank that died is on another machine: this one only saw it go
            how = (f"lost its connection to a rank on another machine ({PEER_LOST.search(text)[0]}): that machine's "
                   "output names the rank that failed first")
        else:
            how = "raised " + text
    else:
        how = f"exited with code {failure.exitcode}"
    resume = latest_checkpoint(checkpoint_dir)
    then = f"the rerun resumes from {resume.name}" if resume else "no checkpoint yet: the rerun starts over"
    return f"training failed: rank {rank} (pid {failure.pid}) {how}; {then}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.train.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True, help="launch.json that the qlora_adapter step wrote")
    parser.add_argument("--node-rank", type=int, default=0, help="this machine's rank, 0 to nnodes-1")
    parser.add_argument("--failure-file", type=Path, help="where the one-line failure summary goes")
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGTERM)  # torchrun stops its ranks on SIGTERM (they die with it too, procs.py)
    job = TrainJob.read(args.job)
    if not 0 <= args.node_rank < job.launch.nnodes:
        print(f"error: --node-rank must be in 0-{job.launch.nnodes - 1}, got {args.node_rank}", file=sys.stderr)
        return 2

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        torchrun.run(torchrun.parse_args(torchrun_args(job, args.job, args.node_rank)))
    except ChildFailedError as err:
        for rank, failure in sorted(err.failures.items()):  # every failed rank, for the run's log
            print(f"rank {rank} (pid {failure.pid}): exit code {failure.exitcode} {failure.signal_name()}", file=sys.stderr)
        line = describe_failure(err.failures, Path(job.checkpoint_dir), job.launch.nnodes)
        if args.failure_file:
            args.failure_file.write_text(json.dumps({"message": line}))
        print(line, file=sys.stderr)
        return 1
    if args.node_rank > 0:  # machine 0's step says what happened; a machine joined by hand says it here
        print(f"machine {args.node_rank} of {job.launch.nnodes}: its {job.launch.nproc_per_node} rank(s) finished; "
              "machine 0's step saves the adapter")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip torch's interpreter shutdown once the ranks are done
