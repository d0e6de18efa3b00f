"""deploy/ agrees with itself and with the code: the image, the Secret and ConfigMap names, the data claim, the
ports, the modules the files start, the environment deploy/dagster.yaml reads. Parsed offline (no docker, helm or
cluster here); what these files do when run is not tested."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from urllib.parse import urlsplit

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header

from ops.core.paths import REPO_ROOT
from pipelines.k8s_settings import DEFAULT_SETTINGS_FILE, load_k8s_settings

DEPLOY = REPO_ROOT / "deploy"
# The variables the shared instance and registry read (deploy/dagster.yaml, tests/services.py, MLflow, boto3).
PIPELINE_ENV = {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
                "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def project_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} with the defaults (the trial values)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def module_of(args: list[str]) -> str:
    """The module after -m / --module-name in a dagster command line."""
    for flag in ("-m", "--module-name"):
        if flag in args:
            return args[args.index(flag) + 1]
    raise AssertionError(f"no -m in {args}")


def env_names(node) -> set[str]:
    """Every {env: NAME} in a dagster.yaml."""
    if isinstance(node, dict):
        return ({node["env"]} if set(node) == {"env"} else set()).union(*(env_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_names(v) for v in node))
    return set()


@pytest.fixture(scope="module")
def settings():
    return load_k8s_settings(DEFAULT_SETTINGS_FILE)


@pytest.fixture(scope="module")
def helm():
    return load("helm/values.yaml")


@pytest.fixture(scope="module")
def compose():
    return load("compose.yaml")


def test_one_image_everywhere_tagged_with_the_project_version(settings, helm, compose):
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    helm_image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    assert settings.image == helm_image
    assert helm_image.endswith(f":{project_version()}")
    assert deployment["image"]["pullPolicy"] == settings.image_pull_policy
    for service in ("mlflow", "dagster"):
        assert compose["services"][service]["image"] == f"qlora-pipeline:{project_version()}"
        assert compose["services"][service]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_the_helm_code_location_is_the_k8s_module_and_gets_the_pods_environment(settings, helm):
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert module_of(deployment["dagsterApiGrpcArgs"]) == "pipelines.k8s_definitions"
    assert importlib.util.find_spec("pipelines.k8s_definitions") is not None
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"  # the k8s_job_executor needs it on the instance
    for where in (deployment, launcher):
        assert [s["name"] for s in where["envSecrets"]] == settings.env_secrets
        assert [c["name"] for c in where["envConfigMaps"]] == settings.env_config_maps
    claims = [v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]]
    assert claims == [settings.data_claim]
    assert [m["mountPath"] for m in deployment["volumeMounts"]] == [settings.data_path]


def test_the_dockerfile_serves_that_module_on_the_helm_port(helm):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert module_of(cmd) == "pipelines.k8s_definitions" and cmd[cmd.index("-p") + 1] == str(deployment["port"])
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", dockerfile, re.M)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.[0-9.]+-cudnn-runtime-", dockerfile, re.M)
    assert 'pip install -e ".[postgres,k8s]"' in dockerfile
    # torch from its own ARG, not the Makefile's CPU pin (torch==2.13.0 is a CPU build on the build machines only)
    torch = re.search(r'^ARG TORCH_SPEC="(.*)"$', dockerfile, re.M).group(1)
    assert "2.13.0" not in torch and re.search(r'^RUN pip install "\$TORCH_SPEC"$', dockerfile, re.M)
    assert "ENV" in dockerfile and "QLORA_HOME=/data/qlora" in dockerfile


def test_helm_pools_monitoring_and_retries_match_the_instance_file(helm):
    instance_file = DEPLOY / "dagster.yaml"
    if not instance_file.exists():
        pytest.skip("deploy/dagster.yaml comes with the shared-instance work (branch shared)")
    instance = yaml.safe_load(instance_file.read_text())
    pools, helm_pools = instance["concurrency"]["pools"], helm["concurrency"]["pools"]
    assert (helm_pools["defaultLimit"], helm_pools["granularity"], helm_pools["opGranularityRunBuffer"]) == \
        (pools["default_limit"], pools["granularity"], pools["op_granularity_run_buffer"])
    assert helm["concurrency"]["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    monitoring, helm_monitoring = instance["run_monitoring"], helm["dagsterDaemon"]["runMonitoring"]
    assert helm_monitoring["enabled"] == monitoring["enabled"]
    assert helm_monitoring["freeSlotsAfterRunEndSeconds"] == monitoring["free_slots_after_run_end_seconds"]
    assert helm["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    retries, helm_retries = instance["run_retries"], helm["dagsterDaemon"]["runRetries"]
    assert (helm_retries["maxRetries"], helm_retries["retryOnAssetOrOpFailure"]) == \
        (retries["max_retries"], retries["retry_on_asset_or_op_failure"])


def test_compose_gives_dagster_what_the_instance_file_reads(compose):
    dagster = compose["services"]["dagster"]
    env = {k: interpolate(v) for k, v in dagster["environment"].items()}
    assert PIPELINE_ENV <= set(env)
    mount = next(v for v in dagster["volumes"] if v.startswith("./dagster.yaml:"))
    assert mount.split(":")[1] == f"{env['DAGSTER_HOME']}/dagster.yaml"
    instance_file = DEPLOY / "dagster.yaml"
    if instance_file.exists():  # branch shared writes it; until then the names above are the agreed ones
        assert env_names(yaml.safe_load(instance_file.read_text())) <= set(env)
    assert module_of(dagster["command"]) == "pipelines.server_definitions"
    assert importlib.util.find_spec("pipelines.server_definitions") is not None


def test_compose_services_agree_on_hosts_ports_and_credentials(compose):
    services = compose["services"]
    env = {k: interpolate(v) for k, v in services["dagster"]["environment"].items()}
    postgres = {k: interpolate(v) for k, v in services["postgres"]["environment"].items()}
    assert env["DAGSTER_PG_HOST"] in services and env["DAGSTER_PG_PORT"] == "5432"
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]) == \
        (env["DAGSTER_PG_USER"], env["DAGSTER_PG_PASSWORD"], env["DAGSTER_PG_DB"])
    mlflow = {k: interpolate(v) for k, v in services["mlflow"]["environment"].items()}
    # the server is deploy/mlflow-server.sh (tested in tests/scale), its database settings in its own variables
    assert (mlflow["MLFLOW_PG_HOST"], mlflow["MLFLOW_PG_PORT"], mlflow["MLFLOW_PG_USER"], mlflow["PGPASSWORD"]) == \
        ("postgres", "5432", postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert not any("://" in str(v) and "@" in str(v) for v in mlflow.values()), "a password inside a URL"
    assert compose["configs"]["mlflow-database"]["content"] == f"CREATE DATABASE {mlflow['MLFLOW_PG_DB']};"
    tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
    command = services["mlflow"]["command"]
    assert command[0] == "deploy/mlflow-server.sh" and (REPO_ROOT / command[0]).is_file()
    assert tracking.hostname in services and str(tracking.port) == command[command.index("--port") + 1]
    # MLflow's own host check, with the Host header the dagster container sends.
    allowed = mlflow["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert is_allowed_host_header(allowed, tracking.netloc) and is_allowed_host_header(allowed, "127.0.0.1:5000")
    s3 = urlsplit(env["MLFLOW_S3_ENDPOINT_URL"])
    assert s3.hostname in services and f":{s3.port}" in services[s3.hostname]["command"]
    bucket = urlsplit(mlflow["MLFLOW_ARTIFACTS_DESTINATION"]).netloc
    assert bucket in services["bucket"]["entrypoint"][-1]
    minio = {k: interpolate(v) for k, v in services["minio"]["environment"].items()}
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
