"""Real servers on free loopback ports for the tests of a shared instance and registry (tests/scale).

`postgres_server` (Debian's PostgreSQL: initdb into a temporary directory, pg_ctl start, a password on TCP),
`s3_server` (moto's S3 server, one bucket) and `mlflow_server` (`mlflow server` on both, artifacts proxied to
S3). Each is session-scoped, always stopped at the end, and skipped with the reason when its program is missing,
except under CI=true where a missing program fails the test (as tests/ui does with chromium).

Import the fixtures into a conftest: `from tests.services import postgres_server, s3_server, mlflow_server`.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pytest

# Fake credentials: tests/scale greps logs, the event log, MLflow and the bucket for them.
PG_PASSWORD = "pg-FAKE-password-" + secrets.token_hex(4)
S3_ACCESS_KEY, S3_SECRET_KEY = "AKIAFAKEQLORATEST", "s3-FAKE-secret-" + secrets.token_hex(4)
PG_USER, BUCKET = "qlora", "qlora-artifacts"
START_TIMEOUT_S = 120  # mlflow server migrates a fresh PostgreSQL schema first: ~20 s idle, more on 2 loaded cores


def missing(why: str) -> None:
    """Skip the test for a missing program, or fail it under CI=true (CI must run what the suite promises)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"server test under CI: {why}")
    pytest.skip(why)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready, what: str, proc: Optional[subprocess.Popen] = None, log: Optional[Path] = None,
               timeout: float = START_TIMEOUT_S) -> None:
    """Poll `ready()` every 0.25 s; raise naming `what` (and the log's tail) when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else f"not ready in {timeout:.0f}s"
    raise RuntimeError(f"{what} {state}\n{tail}")


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except OSError:
        return False


@contextmanager
def process_group(cmd: list[str], env: dict, log: Path, cwd: Optional[Path] = None) -> Iterator[subprocess.Popen]:
    """A subprocess in its own process group, whose whole group (server and workers) is stopped on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):  # SIGKILL also takes workers that outlived it
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass


# ---- PostgreSQL ---------------------------------------------------------------------------------------------------

def postgres_bindir() -> Optional[Path]:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).resolve().parent  # Debian links them into PATH from its own bindir
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A running PostgreSQL on 127.0.0.1:`port`; user `user` with `password` over TCP (scram-sha-256)."""

    port: int
    bindir: Path
    host: str = "127.0.0.1"
    user: str = PG_USER
    password: str = PG_PASSWORD
    databases: list[str] = field(default_factory=list)

    def create_database(self, name: str) -> str:
        """Create database `name` (once) and return its URI without the password (libpq reads PGPASSWORD)."""
        if name not in self.databases:
            subprocess.run([str(self.bindir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name],
                           env={**os.environ, "PGPASSWORD": self.password}, check=True, capture_output=True)
            self.databases.append(name)
        return self.uri(name)

    def uri(self, db: str, driver: str = "") -> str:
        """libpq's URI of database `db`; with `driver` (psycopg2) SQLAlchemy's, as MLflow takes it."""
        return f"postgresql{'+' + driver if driver else ''}://{self.user}@{self.host}:{self.port}/{db}"

    def dagster_env(self, db: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads, for database `db` (created when missing)."""
        self.create_database(db)
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": db}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL in a temporary data directory on a free loopback port; stopped and removed after."""
    bindir = postgres_bindir()
    if bindir is None:
        missing("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql")
    # initdb and postgres refuse to run as root: as root, run them as the `postgres` user, in a directory it owns
    # (pytest's tmp_path lies under a root-only directory).
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root without a `postgres` user to run PostgreSQL as (apt-get install postgresql)")
        if shutil.which("runuser") is None:
            missing("running as root without runuser: cannot start PostgreSQL as the postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="qlora-pg-"))
    data, sockets, pwfile, log = root / "data", root / "sock", root / "pw", root / "server.log"
    sockets.mkdir()
    pwfile.write_text(PG_PASSWORD + "\n")
    if as_user:
        shutil.chown(root, "postgres", "postgres")
        for p in (sockets, pwfile):
            shutil.chown(p, "postgres", "postgres")
    port = free_port()
    started = False
    try:
        subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(pwfile),
                                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        pwfile.unlink()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        # -l: the server's own log; pg_ctl -w waits until it accepts connections.
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w",
                                  "-t", "60", "start"], check=True, capture_output=True)
        started = True
        yield PostgresServer(port=port, bindir=bindir)
    except subprocess.CalledProcessError as err:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {err.stderr.decode(errors='replace')}\n{tail}") from err
    finally:
        if started:
            subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# ---- S3 -----------------------------------------------------------------------------------------------------------

@dataclass
class S3Server:
    """moto's S3 on `endpoint`, holding `bucket`; `env` has the variables boto3 and MLflow read."""

    endpoint: str
    bucket: str = BUCKET
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """moto's S3 server (`moto_server`, a subprocess) on a free loopback port, with one empty bucket."""
    program = Path(sys.executable).parent / "moto_server"
    if not program.exists() and shutil.which("moto_server") is None:
        missing("no moto_server (pip install 'moto[server]', in the dev extra)")
    try:
        import boto3  # noqa: F401
    except ImportError:
        missing("boto3 is not installed (pip install -e '.[postgres]')")
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    cmd = [str(program) if program.exists() else shutil.which("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with process_group(cmd, dict(os.environ), log) as proc:
        server = S3Server(f"http://127.0.0.1:{port}")
        wait_until(lambda: answers_http(f"{server.endpoint}/moto-api/"), "moto_server", proc, log)
        server.client().create_bucket(Bucket=server.bucket)
        yield server


# ---- MLflow tracking server ---------------------------------------------------------------------------------------

@dataclass
class MlflowServer:
    """`mlflow server` on `url`: runs and the registry in PostgreSQL database `database`, artifacts in S3 under
    `artifacts` (s3://bucket/prefix), proxied, so clients need only the URL."""

    url: str
    database: str
    artifacts: str
    log: Path


MLFLOW_SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "mlflow-server.sh"


@pytest.fixture(scope="session")
def mlflow_server(postgres_server, s3_server, tmp_path_factory) -> Iterator[MlflowServer]:
    """`mlflow server` on PostgreSQL (database `mlflow`) with artifacts proxied to the S3 bucket; stopped after."""
    postgres_server.create_database("mlflow")
    port, log = free_port(), tmp_path_factory.mktemp("mlflow-server") / "server.log"
    artifacts = f"s3://{s3_server.bucket}/mlflow"
    # deploy/mlflow-server.sh itself, so the command a team runs is the one tested; secrets only in the environment.
    env = {**os.environ, **s3_server.env, "PGPASSWORD": postgres_server.password, "MLFLOW_PG_HOST": postgres_server.host,
           "MLFLOW_PG_PORT": str(postgres_server.port), "MLFLOW_PG_USER": postgres_server.user, "MLFLOW_PG_DB": "mlflow",
           "MLFLOW_ARTIFACTS_DESTINATION": artifacts, "MLFLOW_PORT": str(port),
           "MLFLOW": str(Path(sys.executable).parent / "mlflow")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = ["bash", str(MLFLOW_SERVER_SCRIPT), "--workers", "1"]  # one worker: two cores shared by the whole test
    with process_group(cmd, env, log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_http(f"{url}/health"), "mlflow server", proc, log)
        yield MlflowServer(url=url, database="mlflow", artifacts=artifacts, log=log)
