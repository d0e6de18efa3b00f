"""Asset jobs whose run config is checked by `pipelines.run.check_run_config` when Dagster builds the run's plan.

Why a config mapping: the launchpad's Launch (GraphQL `launchRun`) checks the config against the job's schema
snapshot only (dagster_graphql/implementation/external.py `ensure_valid_config`); the first user code it runs before
the run is created is the job's config mapping, called by `ResolvedRunConfig.build` while the code server builds the
execution plan (dagster/_core/system_config/objects.py). A mapping's outer schema is what the launchpad shows, so
it is the job's own typed run config schema (field descriptions and defaults included), and the mapping passes the
config through unchanged once the check passes. `python -m pipelines.run` and `execute_in_process` build the same
plan, so they are checked the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import dagster as dg


def refuse_invalid(job_name: str, untouched: dict) -> Callable[[dict], dict]:
    """The mapping function: the run config itself when `check_run_config` finds nothing in the sections it sets.

    Args:
        job_name: named in the error.
        untouched: what Dagster makes of an empty run config (every default filled in). A step or resource section
            equal to its untouched one is not checked, as the command line does not check a section the config file
            leaves out: in a subset run the other steps' sections are there, filled with defaults, but do not run.

    Returns:
        a function of the run config (Dagster's defaults filled in, env values unresolved) returning it unchanged.

    Raises (from the function):
        dg.DagsterInvalidConfigError: one line per problem, the lines the command line prints. A Dagster error, so
            Dagster reports it as it is rather than wrapping it as a crash of the mapping function.
    """

    def check(config: dict) -> dict:
        from pipelines.run import check_run_config, config_error

        given = {part: {name: section for name, section in (config.get(part) or {}).items()
                        if section != (untouched.get(part) or {}).get(name)}
                 for part in ("ops", "resources")}
        problems = check_run_config(given)
        if problems:
            raise dg.DagsterInvalidConfigError(config_error(f"job {job_name}", problems), [], config)
        return config

    return check


def checked_asset_job(name: str, assets: Sequence[Any], asset_checks: Sequence[Any], resources: dict[str, Any],
                      default: dict | None = None, description: str | None = None) -> dg.UnresolvedAssetJobDefinition:
    """`dg.define_asset_job` over `assets` whose run config passes `check_run_config` before a run is created.

    Args:
        name: the job's name.
        assets, asset_checks, resources: what the job's Definitions holds (they make its run config schema).
        default: the run config the launchpad opens with; each value becomes the default of its field, as with
            `define_asset_job(config=dict)`. None: the steps' own defaults.
        description: the job's description in the UI.

    Returns:
        the unresolved asset job, for `dg.Definitions(jobs=...)`.
    """
    selection = dg.AssetSelection.assets(*assets)
    # The schema Dagster itself makes for this job (with `default` as defaults): resolved once from a plain twin.
    twin = dg.define_asset_job(name, selection=selection, config=default)
    schema = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[twin],
                            resources=resources).resolve_job_def(name).run_config_schema.config_type
    # Unprocessed values (enum names, {"env": ...}), as the steps' config classes and check_run_config take them.
    untouched = dg.ConfigMapping(config_fn=lambda config: config, config_schema=schema,
                                 receive_processed_config_values=False).resolve_from_unvalidated_config({})
    mapping = dg.ConfigMapping(config_fn=refuse_invalid(name, untouched), config_schema=schema,
                               receive_processed_config_values=False)
    return dg.define_asset_job(name, selection=selection, config=mapping, description=description)
