"""Run the whole pipeline headless from a YAML run config, through Dagster, the same job the UI launches.

    python -m pipelines.run configs/demo.yaml

Prints the evaluation table, which steps were cache hits, and last a line `model_uri: models:/<name>/<version>`
naming the registry version that holds this run's adapter (also after a registration cache hit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from pydantic import ValidationError

from assets import CONFIG_CLASSES
from pipelines.definitions import defs
from pipelines.instance import get_instance, reap_dead_runs, runner_tags


def load_run_config(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"error: config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SystemExit(f"error: {path} is not valid YAML: {err}")
    if not isinstance(config, dict):
        raise SystemExit(f"error: {path} must hold a mapping with 'ops' and/or 'resources', got {type(config).__name__}")
    return config


def check_run_config(config: dict) -> list[str]:
    """Validate every step's config up front, so a bad value fails before any step does work."""
    problems = []
    for asset, section in (config.get("ops") or {}).items():
        cls = CONFIG_CLASSES.get(asset)
        if cls is None:
            problems.append(f"ops.{asset}: unknown step; the steps are {', '.join(CONFIG_CLASSES)}")
            continue
        fields = (section or {}).get("config") or {}
        for key in sorted(set(fields) - set(cls.model_fields)):
            problems.append(f"ops.{asset}.config.{key}: unknown key; valid keys: {', '.join(sorted(cls.model_fields))}")
        try:
            cls(**fields)
        except ValidationError as err:
            for e in err.errors():
                where = ".".join(str(p) for p in e["loc"])
                problems.append(f"ops.{asset}.config.{where}: {e['msg'].removeprefix('Value error, ')}")
    return problems


def materializations(result) -> dict[str, dict]:
    """Each materialized asset's metadata as plain values."""
    found = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        found[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return found


def failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and "DagsterExecutionStepExecutionError" in err.cls_name:
                err = err.cause
            return f"step {event.step_key} failed: {err.cls_name}: {err.message.strip()}"
    return "the run failed (see the Dagster run log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="YAML run config (ops: and resources: sections)")
    parser.add_argument("--job", default="qlora_pipeline")
    args = parser.parse_args(argv)

    run_config = load_run_config(args.config)
    problems = check_run_config(run_config)
    if problems:
        print(f"error: invalid config in {args.config}:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    started = time.time()
    job = defs.resolve_job_def(args.job)
    instance = get_instance()
    reap_dead_runs(instance)
    try:
        result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False,
                                        tags=runner_tags())
    except Exception as err:  # invalid run config is raised before the run starts
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if not result.success:
        print(f"error: {failure_message(result)}", file=sys.stderr)
        return 1

    found = materializations(result)
    evaluation = found.get("adapter_evaluation", {})
    if "comparison" in evaluation:
        print("\nEvaluation on the held-out split (base vs base+adapter):\n" + evaluation["comparison"] + "\n")
    for asset, meta in found.items():
        print(f"{asset:22s} {'cache hit' if meta.get('cache_hit') else 'computed '}  {meta.get('fingerprint', '')}")
    print(f"run {result.run_id} finished in {time.time() - started:.1f}s")
    registered = found["registered_adapter"]
    moved = registered["alias_version"] != registered["version"]
    print(f"aliases of version {registered['version']}: {registered['version_aliases']}"
          + (f" ({registered['alias_uri']} is version {registered['alias_version'] or 'unset'})" if moved else ""))
    print(f"model_uri: {registered['model_uri']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
