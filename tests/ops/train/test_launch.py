"""The torchrun launch without training: its settings' checks, torchrun's arguments, the one-line failure summary
(from torch's own failure records) and ranks that die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from ops.train.distributed import rank_info
from ops.train.launch import ENTRY_MODULE, TrainJob, describe_failure, torchrun_args
from ops.train.launch_spec import LaunchSpec
from ops.train.worker import KILL_ENV, KillAtStep, fault_callbacks


@pytest.mark.parametrize("fields, message", [
    ({"nproc_per_node": 0}, "nproc_per_node must be >= 1, got 0"),
    ({"nnodes": 0}, "nnodes must be >= 1, got 0"),
    ({"max_restarts": -1}, "max_restarts must be >= 0, got -1"),
    ({"nnodes": 2}, "nnodes=2 needs rdzv_endpoint (host:port of machine 0, reachable from every machine)"),
    ({"rdzv_endpoint": "node0"}, "rdzv_endpoint must be host:port with a port in 1-65535, got 'node0'"),
    ({"rdzv_endpoint": "node0:0"}, "got 'node0:0'"),
    ({"rdzv_endpoint": "node0:70000"}, "got 'node0:70000'"),
    ({"rdzv_endpoint": ":29400"}, "got ':29400'"),
    ({"rdzv_endpoint": "node0:29x"}, "got 'node0:29x'"),
])
def test_bad_launch_settings_are_refused_in_one_line(fields, message):
    with pytest.raises(ValidationError) as caught:
        LaunchSpec(**fields)
    assert message in str(caught.value)


def test_good_launch_settings_and_the_world_size():
    assert LaunchSpec().world_size() == 1
    spec = LaunchSpec(nproc_per_node=4, nnodes=2, rdzv_endpoint="[::1]:29400")
    assert spec.world_size() == 8
    assert LaunchSpec(nnodes=3, rdzv_endpoint="10.0.0.5:29400").launch_settings()["nnodes"] == 3


def job(tmp_path: Path, **launch) -> TrainJob:
    return TrainJob(model_dir="m", dataset_dir="d", out_dir="o", checkpoint_dir=str(tmp_path), spec={"max_steps": 2},
                    launch=LaunchSpec(**launch), rdzv_id="fp123")


def test_one_machine_meets_on_a_free_local_port_and_several_at_the_endpoint(tmp_path):
    args = torchrun_args(job(tmp_path), tmp_path / "launch.json", 0)
    assert "--standalone" in args and "--rdzv-endpoint" not in args
    assert args[-4:] == ["-m", ENTRY_MODULE, "--job", str(tmp_path / "launch.json")]
    multi = job(tmp_path, nnodes=2, nproc_per_node=3, rdzv_endpoint="127.0.0.1:29400")
    node0, node1 = (torchrun_args(multi, tmp_path / "launch.json", r) for r in (0, 1))
    for rank, args in enumerate((node0, node1)):
        assert args[args.index("--node-rank") + 1] == str(rank)
        assert args[args.index("--rdzv-id") + 1] == "fp123"
        assert args[args.index("--nproc-per-node") + 1] == "3"
        assert args[args.index("--rdzv-backend") + 1] == "static"  # ranks follow --node-rank: rank 0 on machine 0
    from torch.distributed.run import config_from_args, parse_args

    parsed = parse_args(node1)  # torchrun itself takes them
    assert (parsed.nnodes, parsed.rdzv_endpoint, parsed.module) == ("2", "127.0.0.1:29400", True)
    config, _, _ = config_from_args(parsed)
    assert config.rdzv_configs["rank"] == 1 and config.rdzv_endpoint == "127.0.0.1:29400"


def test_the_job_file_round_trips(tmp_path):
    original = job(tmp_path, nnodes=2, rdzv_endpoint="h:1")
    assert TrainJob.read(original.write(tmp_path / "x" / "launch.json")) == original


def failure(local_rank: int, pid: int, exitcode: int, error_file: str = "<none>"):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    return ProcessFailure(local_rank=local_rank, pid=pid, exitcode=exitcode, error_file=error_file)


def test_a_killed_rank_is_named_with_its_signal_and_the_checkpoint_a_rerun_resumes_from(tmp_path):
    (tmp_path / "checkpoint-6").mkdir()
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()  # cut off mid-write: not resumable
    # torchrun then stops rank 0, and rank 2 fails on the broken connection: the killed rank is still the cause
    failures = {0: failure(0, 4000, -signal.SIGTERM), 1: failure(1, 4242, -signal.SIGKILL), 2: failure(0, 4001, 1)}
    assert describe_failure(failures, tmp_path) == \
        "training failed: rank 1 (pid 4242) was killed by SIGKILL; the rerun resumes from checkpoint-6"
    assert describe_failure({0: failure(0, 7, 3)}, tmp_path / "none") == \
        "training failed: rank 0 (pid 7) exited with code 3; no checkpoint yet: the rerun starts over"


def test_a_rank_that_raised_is_named_with_its_exception(tmp_path):
    error_file = tmp_path / "error.json"
    script = ("from torch.distributed.elastic.multiprocessing.errors import record\n"
              "@record\ndef main():\n    raise ValueError('training loss became nan at step 3')\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TORCHELASTIC_ERROR_FILE": str(error_file)},
                          capture_output=True, text=True)
    assert proc.returncode == 1 and error_file.is_file()
    line = describe_failure({2: failure(0, 99, 1, str(error_file))}, tmp_path)
    assert line == ("training failed: rank 2 (pid 99) raised ValueError: training loss became nan at step 3; "
                    "no checkpoint yet: the rerun starts over")


def test_a_rank_that_lost_a_peer_on_another_machine_points_there(tmp_path):
    """Machine 0 sees only its own rank fail on gloo's broken link when machine 1's rank was killed."""
    error_file = tmp_path / "error.json"
    script = ("from torch.distributed.elastic.multiprocessing.errors import record\n"
              "@record\ndef main():\n    raise RuntimeError('[../gloo/transport/tcp/pair.cc:537] Read error "
              "[127.0.0.1]:24237: Connection reset by peer')\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TORCHELASTIC_ERROR_FILE": str(error_file)},
                          capture_output=True, text=True)
    assert proc.returncode == 1 and error_file.is_file()
    failures = {0: failure(0, 7591, 1, str(error_file))}
    assert describe_failure(failures, tmp_path, nnodes=2) == (
        "training failed: rank 0 (pid 7591) lost its connection to a rank on another machine (Connection reset by "
        "peer): that machine's output names the rank that failed first; no checkpoint yet: the rerun starts over")
    # on one machine every rank is in `failures`, so the exception is the rank's own story
    assert "raised RuntimeError: [../gloo" in describe_failure(failures, tmp_path, nnodes=1)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has died already


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_rank_dies_with_its_parent(tmp_path):
    # parent -> child (a new session, as torchrun starts ranks) that asks to die with it, then sleeps
    child = ("import subprocess, sys, time\n"
             "code = 'from ops.train.procs import die_with_parent; die_with_parent(); import time; time.sleep(60)'\n"
             "p = subprocess.Popen([sys.executable, '-c', code], start_new_session=True)\n"
             f"open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid))\n"
             "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", child], cwd=Path(__file__).resolve().parents[3])
    pid_file = tmp_path / "pid"
    deadline = time.time() + 30
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.time() < deadline and parent.poll() is None
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    time.sleep(0.5)  # past the import and the prctl call
    assert alive(grandchild)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while alive(grandchild) and time.time() < deadline:
        time.sleep(0.05)
    if alive(grandchild):
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the rank outlived its parent")


def test_the_test_only_fault_applies_to_its_rank_alone():
    assert fault_callbacks(rank_info({"RANK": "1", "WORLD_SIZE": "2"}), {}) == []
    hit = fault_callbacks(rank_info({"RANK": "1", "WORLD_SIZE": "2"}), {KILL_ENV: "1:5"})
    assert len(hit) == 1 and isinstance(hit[0], KillAtStep) and hit[0].step == 5
    assert fault_callbacks(rank_info({"RANK": "0", "WORLD_SIZE": "2"}), {KILL_ENV: "1:5"}) == []


def test_rank_0_finds_the_runner_terminal_by_name(tmp_path):
    import pty

    from ops.core.progress import bars_to
    from ops.train.launch import terminal_name

    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as tty, bars_to(tty):
            assert terminal_name() == os.ttyname(follower)  # what rank 0 opens to draw its bar
        with open(tmp_path / "log", "w") as file, bars_to(file):
            assert terminal_name() is None  # a log file: no bar anywhere
    finally:
        os.close(leader)
        os.close(follower)
