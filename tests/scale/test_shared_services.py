"""The whole pipeline on a shared instance and registry: Dagster on PostgreSQL (deploy/dagster.yaml), MLflow server on
PostgreSQL with artifacts in S3, all real servers on loopback (tests/services.py).

Two `python -m pipelines.run` start at once on the same instance: both finish, their `gpu` pool steps never overlap,
the runs are rows in PostgreSQL, and the registered model loads from S3 in a fresh process that knows only the
server's address. Then no fake secret (the database password, the S3 secret key) is anywhere it should not be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ops.core.paths import REPO_ROOT
from tests.run_configs import tiny_run_config
from tests.services import PG_PASSWORD, S3_SECRET_KEY
from tests.test_concurrent_runs import gpu_step_windows

pytestmark = pytest.mark.slow
MODEL = "shared-runs"
DAGSTER_DB = "dagster"
# The second run reaches the server through a URI with credentials in it (the server has no auth and ignores them):
# they must be redacted wherever the URI is shown.
URI_PASSWORD = "uri-FAKE-password-31"
SECRETS = (PG_PASSWORD, S3_SECRET_KEY, URI_PASSWORD)
LEARNING_RATES = (1e-3, 2e-3)
STEPS = ("quantized_base_model", "training_dataset", "qlora_adapter", "adapter_evaluation", "registered_adapter")


def write_config(path: Path, base_dir: Path, learning_rate: float) -> Path:
    config = tiny_run_config(MODEL, base_dir, data={"max_rows": 80, "max_seq_len": 48},
                             evaluation={"num_generation_examples": 2, "max_new_tokens": 2},
                             train={"max_steps": 4, "batch_size": 4, "learning_rate": learning_rate,
                                    "logging_steps": 2, "save_steps": 2, "warmup_steps": 30})
    # The tracking server comes from the environment at run time, as a team's recipe would take it.
    config["resources"]["mlflow"] = {"config": {"tracking_uri": {"env": "MLFLOW_TRACKING_URI"}}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def shared_env(postgres_server, s3_server, mlflow_server, tmp_path_factory) -> dict[str, str]:
    """A runner's environment on the shared services: the instance file, its PostgreSQL, the tracking server, and
    the S3 keys a worker machine would hold (the runs should not need them: the server proxies artifacts)."""
    home = tmp_path_factory.mktemp("shared") / "qlora-home"
    env = {**os.environ, **postgres_server.dagster_env(DAGSTER_DB), **s3_server.env, "QLORA_HOME": str(home),
           "QLORA_INSTANCE": "deploy/dagster.yaml", "MLFLOW_TRACKING_URI": mlflow_server.url}
    env.pop("DAGSTER_HOME", None)
    return env


@pytest.fixture(scope="module")
def two_runs(shared_env, tiny_base_dir, tmp_path_factory) -> list[str]:
    """Two pipeline runs started at once on the shared instance: their outputs (both exited 0)."""
    tmp = tmp_path_factory.mktemp("configs")
    configs = [write_config(tmp / f"run{i}.yaml", tiny_base_dir, lr) for i, lr in enumerate(LEARNING_RATES)]
    server = shared_env["MLFLOW_TRACKING_URI"]
    envs = [shared_env, {**shared_env, "MLFLOW_TRACKING_URI": server.replace("://", f"://alice:{URI_PASSWORD}@")}]
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.run", str(c)], env=env, cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c, env in zip(configs, envs)]
    try:
        outputs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:  # timed out: never leave a runner behind
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    return outputs


@pytest.fixture
def shared_instance(shared_env, monkeypatch) -> dg.DagsterInstance:
    """The instance the runs used, opened from the same file and variables."""
    for key in ("QLORA_HOME", "QLORA_INSTANCE", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER",
                "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(key, shared_env[key])
    monkeypatch.chdir(REPO_ROOT)
    from pipelines.instance import get_instance

    return get_instance()


def test_two_runs_on_postgres_share_the_gpu_pool_one_step_at_a_time(two_runs, shared_instance, postgres_server):
    assert type(shared_instance.run_storage).__name__ == "PostgresRunStorage"
    runs = shared_instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    assert len(runs) == 2
    windows = sorted(w for run in runs for w in gpu_step_windows(shared_instance, run.run_id))
    for (_, end), (next_start, _) in zip(windows, windows[1:]):
        assert next_start >= end, f"two gpu-pool steps overlapped: {windows}"

    import psycopg2  # the rows themselves, read with the database's own client

    with psycopg2.connect(postgres_server.uri(DAGSTER_DB), password=postgres_server.password) as conn, \
            conn.cursor() as cur:
        cur.execute("select run_id, status from runs")
        assert sorted(cur.fetchall()) == sorted((r.run_id, "SUCCESS") for r in runs)
    assert sorted(line for o in two_runs for line in o.splitlines() if line.startswith("model_uri:")) == [
        f"model_uri: models:/{MODEL}/1", f"model_uri: models:/{MODEL}/2"]


def test_registered_model_loads_from_s3_in_a_fresh_process(two_runs, mlflow_server, s3_server, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    location = client.get_model_version_download_uri(MODEL, champion.version)
    assert location.startswith("mlflow-artifacts:/"), location  # the server proxies artifacts: clients need no S3 keys
    prefix = "mlflow/" + location.removeprefix("mlflow-artifacts:").strip("/") + "/"
    stored = s3_server.keys(prefix)
    assert any(k.endswith("adapter_model.safetensors") for k in stored), stored

    # Outside the repository, with the server's address and nothing else: no S3 keys, no data home.
    code = (f"import json, mlflow; m = mlflow.pyfunc.load_model('models:/{MODEL}@champion'); "
            "print(json.dumps(m.predict([{'instruction': 'How many words are there?', 'input': 'red sky'}], "
            "params={'max_new_tokens': 2})))")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": mlflow_server.url,
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    generations = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(generations) == 1 and isinstance(generations[0], str)

    # The registry CLI reads the same server: lineage tags and the training params of the champion.
    show = subprocess.run([sys.executable, "-m", "ops.registry.cli", "show", f"{MODEL}@champion", "--json"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert show.returncode == 0, show.stderr[-3000:]
    details = json.loads(show.stdout)
    assert details["version"] == int(champion.version) and "champion" in details["aliases"]
    assert {"adapter_fingerprint", "dagster_run_id"} <= set(details["tags"]) and details["params"]


def test_a_rerun_on_the_server_is_all_cache_hits_and_reuses_its_version(two_runs, shared_env, tiny_base_dir, tmp_path):
    """The warm path on a server: no sqlite file to read, so the registry is asked through MLflow's client."""
    config = write_config(tmp_path / "again.yaml", tiny_base_dir, LEARNING_RATES[0])
    proc = subprocess.run([sys.executable, "-m", "pipelines.run", str(config)], env=shared_env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    steps = [line for line in lines if line.split(" ")[0] in STEPS]
    assert len(steps) == 5 and all("cache hit" in line for line in steps), steps
    first = next(line for line in two_runs[0].splitlines() if line.startswith("model_uri:"))
    assert lines[-1] == first and any(" reused: " in line for line in lines), lines[-4:]


def database_text(postgres_server, db: str) -> str:
    """Every row of every table in database `db`, as text."""
    import psycopg2

    with psycopg2.connect(postgres_server.uri(db), password=postgres_server.password) as conn, conn.cursor() as cur:
        cur.execute("select table_name from information_schema.tables where table_schema = 'public'")
        rows = []
        for (table,) in cur.fetchall():
            cur.execute(f'select * from "{table}"')
            rows += [repr(row) for row in cur.fetchall()]
    return "\n".join(rows)


def test_no_secret_reaches_the_event_log_run_logs_mlflow_or_the_bucket(two_runs, shared_env, postgres_server,
                                                                        s3_server, mlflow_server):
    dagster_rows, mlflow_rows = database_text(postgres_server, DAGSTER_DB), database_text(postgres_server, "mlflow")
    run_ids = [o.split(":")[0].removeprefix("run ") for o in two_runs]
    assert all(r in dagster_rows for r in run_ids) and "learning_rate" in mlflow_rows  # the dumps hold the runs
    home = Path(shared_env["QLORA_HOME"])
    files = {str(p): p.read_bytes() for p in home.rglob("*") if p.is_file()}  # run logs, step cache, compute logs
    assert any(f"logs/{run_ids[1]}.log" in p for p in files)
    s3 = s3_server.client()
    objects = {k: s3.get_object(Bucket=s3_server.bucket, Key=k)["Body"].read() for k in s3_server.keys()}
    assert objects
    assert f"at {mlflow_server.url}: per-step loss" in two_runs[1]  # the second run's URI, shown without its password
    places = {"the Dagster database (event log, runs)": dagster_rows, "the MLflow database (params, tags)": mlflow_rows,
              "the runners' output": "\n".join(two_runs), "the MLflow server's log": mlflow_server.log.read_text()}
    for secret in SECRETS:
        for where, text in places.items():
            assert secret not in text, f"{secret} reached {where}"
        assert not [p for p, data in files.items() if secret.encode() in data], f"{secret} written under QLORA_HOME"
        assert not [k for k, data in objects.items() if secret.encode() in data], f"{secret} stored in S3"
