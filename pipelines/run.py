"""Run the whole pipeline headless from a YAML run config, through Dagster, the same job the UI launches.

    python -m pipelines.run configs/demo.yaml

Prints the evaluation table, which steps were cache hits, and last a line `model_uri: models:/<name>/<version>`
naming the registry version that holds this run's adapter (also after a registration cache hit).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import typing
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

import yaml
from pydantic import ValidationError

# Library chatter (weight-loading bars, transformers' notices) says nothing to a user of the pipeline; it
# stays on with --verbose. Set before the libraries are imported (inside the steps that use them): MLflow sets its
# own loggers' level when imported, from MLFLOW_LOGGING_LEVEL.
QUIET_LIBRARIES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                   "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "MLFLOW_LOGGING_LEVEL": "WARNING"}


class ConfigFileError(ValueError):
    """A run config file that cannot be read; exit status 2, like every other config error."""


def load_run_config(path: Path) -> dict:
    if not path.is_file():
        raise ConfigFileError(f"error: config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigFileError(f"error: {path} is not valid YAML: {' '.join(str(err).split())}")
    if not isinstance(config, dict):
        raise ConfigFileError(f"error: {path} must hold a mapping with 'ops' and/or 'resources', got {type(config).__name__}")
    return config


def check_run_config(config: dict) -> list[str]:
    """Validate every step's config up front, so a bad value fails before any step does work."""
    from assets import CONFIG_CLASSES

    problems = []
    for asset, section in (config.get("ops") or {}).items():
        cls = CONFIG_CLASSES.get(asset)
        if cls is None:
            problems.append(f"ops.{asset}: unknown step; the steps are {', '.join(CONFIG_CLASSES)}")
            continue
        fields = (section or {}).get("config") or {}
        for key in sorted(set(fields) - set(cls.model_fields)):
            problems.append(f"ops.{asset}.config.{key}: {unknown_key(cls.model_fields)}")
        try:
            cls(**fields)
        except ValidationError as err:
            for e in err.errors():
                where = "".join(f".{p}" for p in e["loc"])  # empty for a check across fields (a model validator)
                problems.append(f"ops.{asset}.config{where}: {validation_message(cls, e)}")
    return problems + check_resources(config.get("resources") or {})


def config_error(where: str, problems: list[str]) -> str:
    """The refusal both the command line and the launchpad show: a header naming `where`, one problem a line."""
    return f"error: invalid config in {where}:\n  " + "\n  ".join(problems)


def unknown_key(valid) -> str:
    """The problem text for a key a setting does not have, listing the ones it has (names, sorted)."""
    return f"unknown key; valid keys: {', '.join(sorted(valid))}"


def validation_message(cls: type, error: dict) -> str:
    """pydantic's message for one error, in our words: an unknown key inside a nested setting (a mixture source)
    lists that setting's valid keys, as the top level does."""
    if error["type"] != "extra_forbidden":
        return error["msg"].removeprefix("Value error, ")
    model = cls
    for part in error["loc"][:-1]:  # down the field annotations; list indices and Optional wrappers are skipped
        if isinstance(part, int):
            continue
        model = model.model_fields[part].annotation
        while typing.get_args(model) and not hasattr(model, "model_fields"):
            model = next(a for a in typing.get_args(model) if a is not type(None))
    return unknown_key(model.model_fields)


def _from_env(value) -> bool:
    """A config value Dagster reads from the environment at run time ({"env": "NAME"}): not checked up front."""
    return isinstance(value, dict) and set(value) == {"env"}


def check_resources(resources: dict) -> list[str]:
    """Unknown resources and unknown resource keys, named the way step problems are (Dagster's own message is a
    schema dump)."""
    from pipelines.definitions import RESOURCES

    problems = []
    for name, section in resources.items():
        resource = RESOURCES.get(name)
        if resource is None:
            problems.append(f"resources.{name}: unknown resource; the resources are {', '.join(sorted(RESOURCES))}")
            continue
        valid, fields = set(type(resource).model_fields), (section or {}).get("config") or {}
        for key in sorted(set(fields) - valid):
            problems.append(f"resources.{name}.config.{key}: {unknown_key(valid)}")
        try:  # the resource's own validators (e.g. the mlflow ui_url), before any step runs
            type(resource)(**{k: v for k, v in fields.items() if k in valid and not _from_env(v)})
        except ValidationError as err:
            problems += [f"resources.{name}.config{''.join(f'.{p}' for p in e['loc'])}: "
                         f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
    return problems


def instance_problem(err: BaseException) -> str:
    """One line for an instance that cannot be opened: the missing file, or the storage's first line of error
    (SQLAlchemy appends the SQL and a help link on later lines; the password is in neither)."""
    from pipelines.instance import UnsetVariables

    if isinstance(err, (FileNotFoundError, UnsetVariables)):
        return str(err)

    def first_line(e: BaseException) -> str:
        return f"{type(e).__name__}: " + next((line.strip() for line in str(e).splitlines() if line.strip()), "")

    root = err
    while root.__cause__ is not None:  # dagster-postgres wraps the refusal in "too many retries for DB connection"
        root = root.__cause__
    why = first_line(err) + (f" ({first_line(root)})" if root is not err else "")
    return f"the Dagster instance cannot be opened: {why}"


def materializations(result) -> dict[str, dict]:
    """Each materialized asset's metadata as plain values."""
    found = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        found[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return found


def run_log_path(run_id: str) -> Path:
    """Where a headless run's full log (every Dagster event, every traceback) is written."""
    from ops.core.paths import qlora_home

    return qlora_home() / "logs" / f"{run_id}.log"


@contextmanager
def terminal_apart(log_file: Path, verbose: bool) -> Iterator[TextIO]:
    """Yield a stream on the terminal's stderr; meanwhile, unless `verbose`, the process's stderr (fd 2) goes to
    `log_file`.

    Dagster copies fd 2 into its compute log and tails it back to the terminal while steps run, and libraries
    write notices there (bitsandbytes' kernels notice, MLflow's "Successfully registered"): those land in the run's
    log file. The steps' lines and progress bars are written to the yielded stream, straight to the terminal.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    if not verbose:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(to_log, 2)
        os.close(to_log)
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()


def step_summary(found: dict[str, dict]) -> list[str]:
    """`<step>  cache hit|computed  <fingerprint>`, one line per step (tests/test_code_version_pipeline.py reads them)."""
    return [f"{asset:22s} {'cache hit' if meta.get('cache_hit') else 'computed '}  {meta.get('fingerprint', '')}"
            for asset, meta in found.items()]


def registry_lines(registered: dict) -> list[str]:
    """What registration did, from the registered_adapter asset's metadata: the version (new or reused), where the
    alias stands, the champion decision, and last `model_uri: models:/NAME/VERSION`."""
    name, version, alias = registered["model_name"], registered["version"], registered["alias"]
    aliases = registered.get("version_aliases") or "none"
    if registered.get("cache_hit"):
        did = f"{name} version {version} reused: it already held this adapter, nothing registered, no alias moved"
    else:
        did = f"{name} version {version} registered; alias {alias} -> version {version}"
    decision = registered.get("gate_decision") or "not gated"
    if decision == "champion":
        gate = f"champion gate: {decision} (alias champion -> version {version})"
    elif decision == "challenger":
        gate = f"champion gate: {decision} (champion stays on an earlier version)"
    else:
        gate = f"champion gate: {decision}"
    lines = [f"registry: {did}", f"{gate}; aliases on version {version}: {aliases}"]
    if registered.get("alias_version") != version:
        where = registered.get("alias_version") or "unset"
        lines.append(f"note: {registered['alias_uri']} is version {where} now, not this adapter's")
    return lines + [f"model_uri: {registered['model_uri']}"]


def refuse(log_file: Path, message: str) -> int:
    """End a run that never started: `message` to the terminal and into the log file the first line named (exit 2)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(message + "\n")
    print(message, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="YAML run config (ops: and resources: sections)")
    parser.add_argument("--job", default="qlora_pipeline")
    parser.add_argument("--verbose", action="store_true",
                        help="also print Dagster's events, tracebacks and library notices (always in the run's log file)")
    args = parser.parse_args(argv)

    if not args.verbose:
        for key, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(key, value)
    try:
        run_config = load_run_config(args.config)
    except ConfigFileError as err:
        print(err, file=sys.stderr)
        return 2
    started = time.time()
    run_id = str(uuid.uuid4())
    log_file = run_log_path(run_id)
    # The first line comes before anything heavy is imported (Dagster, the step configs), so a user sees at once
    # that the command runs and where its log goes.
    print(f"run {run_id}: {args.job} from {args.config}; full log in {log_file}", flush=True)
    problems = check_run_config(run_config)
    if problems:
        return refuse(log_file, config_error(str(args.config), problems))

    import warnings

    import dagster as dg

    from pipelines.console import console_logger, failures
    from pipelines.definitions import defs
    from pipelines.instance import get_instance, reap_dead_runs, runner_tags

    if not args.verbose:
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notices, not the user's
        # the run metadata says which optimizer behaviour ran (ops/train/trainer.py describe_optimizer)
        warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU")
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # the registration step logs what it registered
    from ops.core.progress import bars_to

    try:
        instance = get_instance()
    except Exception as err:  # noqa: BLE001  (a missing instance file, a database that refuses the connection)
        return refuse(log_file, f"error: {instance_problem(err)}")
    reap_dead_runs(instance)
    try:
        with terminal_apart(log_file, args.verbose) as terminal, bars_to(terminal):
            console = console_logger(log_file, args.verbose, terminal)
            job = defs.resolve_job_def(args.job).with_logger_defs({"console": console})
            # Dagster activates a job's logger only when the run config names it.
            result = job.execute_in_process(run_config={**run_config, "loggers": {"console": {}}}, instance=instance,
                                            raise_on_error=False,
                                            tags=runner_tags(), run_id=run_id)
    except Exception as err:  # invalid run config is raised before the run starts
        print(f"error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if not result.success:
        lines = failures(result.all_events) or ["error: the run failed (see the run log)"]
        print("\n".join(lines), file=sys.stderr)
        return 1

    found = materializations(result)
    evaluation = found.get("adapter_evaluation", {})
    if "comparison" in evaluation:
        print("\nEvaluation on the held-out split (base vs base+adapter):\n" + evaluation["comparison"] + "\n")
    print("\n".join(step_summary(found)))
    print(f"run {result.run_id} finished in {time.time() - started:.1f}s")
    print("\n".join(registry_lines(found["registered_adapter"])))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The run is over and stored; skip interpreter shutdown, which took 20-177 s under load (library threads
    # and atexit hooks of torch, MLflow and Dagster), so the prompt returns with the last line.
    os._exit(code)
