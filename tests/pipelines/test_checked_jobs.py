"""The launchable jobs check a run config while Dagster resolves it (what Launch does before it creates a run):
every bad value the command line refuses is refused with the command line's line; good configs and subsets pass;
the launchpad keeps the typed schema, its help and the demo's defaults."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from assets import TrainConfig
from pipelines.definitions import defs, demo_recipe
from pipelines.run import check_run_config
from tests.run_configs import tiny_run_config
from tests.test_bad_inputs import CASES

# Rows the command line refuses for a value; unknown steps and keys are refused by Dagster's schema check before
# any user code runs (the launchpad editor marks them too), with Dagster's own wording.
SCHEMA_ERRORS = ("unknown key", "unknown step", "unknown resource")
REFUSED = [c for c in CASES if check_run_config(c.config)]
VALUE_ROWS = [c for c in REFUSED if not any(s in c.expected for s in SCHEMA_ERRORS)]
SCHEMA_ROWS = [c for c in REFUSED if c not in VALUE_ROWS]


def step_section(job_name: str, step: str) -> dg.Field:
    """The launchpad's field `ops.<step>` in the job's run config schema."""
    root = defs.resolve_job_def(job_name).run_config_schema.config_type
    return root.fields["ops"].config_type.fields[step]


def step_fields(job_name: str, step: str) -> dict:
    """The launchpad's fields of one step's config: {name: dagster Field}."""
    return step_section(job_name, step).config_type.fields["config"].config_type.fields


def test_the_rows_cover_both_kinds():
    assert any(c.what == "a bad value" for c in VALUE_ROWS) and len(VALUE_ROWS) >= 6
    assert SCHEMA_ROWS  # the unknown-key rows


@pytest.mark.parametrize("case", VALUE_ROWS, ids=lambda c: c.what)
def test_a_bad_value_is_refused_with_the_command_line_line(case):
    with pytest.raises(dg.DagsterInvalidConfigError, match=re.escape(case.expected.strip())) as refused:
        dg.validate_run_config(defs.resolve_job_def("qlora_pipeline"), case.config)
    assert str(refused.value).startswith("error: invalid config in job qlora_pipeline:\n  ")


@pytest.mark.parametrize("case", SCHEMA_ROWS, ids=lambda c: c.what)
def test_an_unknown_key_is_refused_by_the_schema(case):
    with pytest.raises(dg.DagsterInvalidConfigError, match="Error in config"):
        dg.validate_run_config(defs.resolve_job_def("qlora_pipeline"), case.config)


def demo_with(**train) -> dict:
    """The demo recipe with its qlora_adapter settings changed, as a user edits them in the launchpad."""
    recipe = demo_recipe()
    recipe["ops"]["qlora_adapter"]["config"].update(train)
    return recipe


def test_the_demo_job_refuses_a_range_error_with_the_command_line_line():
    expected = next(c.expected for c in CASES if c.what == "a bad value").strip()
    with pytest.raises(dg.DagsterInvalidConfigError, match=re.escape(expected)) as refused:
        dg.validate_run_config(defs.resolve_job_def("qlora_demo"), demo_with(r=0))
    assert str(refused.value) == f"error: invalid config in job qlora_demo:\n  {expected}"  # r only: the rest is good


@pytest.mark.parametrize("job_name, config", [
    ("qlora_demo", {}),
    ("qlora_demo", demo_recipe()),
    ("qlora_demo", demo_with(r=8)),
    ("qlora_pipeline", demo_recipe()),  # make demo
    ("qlora_pipeline", tiny_run_config("checked", None)),
    ("qlora_pipeline", {}),  # no step section set: nothing checked up front, as on the command line
])
def test_a_good_config_passes(job_name, config):
    resolved = dg.validate_run_config(defs.resolve_job_def(job_name), config)
    for step, section in config.get("ops", {}).items():
        assert section["config"].items() <= resolved["ops"][step]["config"].items()  # passed on unchanged


def test_a_subset_run_is_not_refused_for_the_steps_it_leaves_out():
    # The steps left out still get their sections, defaults filled in; qlora_pipeline's adapter defaults set no
    # length, which the check would refuse.
    job = defs.resolve_job_def("qlora_pipeline").get_subset(asset_selection={dg.AssetKey("adapter_evaluation")})
    dg.validate_run_config(job, {"ops": {"adapter_evaluation": {"config": {"max_new_tokens": 4}}}})


def test_the_launchpad_keeps_the_typed_schema_its_help_and_the_demo_defaults():
    for job_name in ("qlora_pipeline", "qlora_demo"):
        fields = step_fields(job_name, "qlora_adapter")
        assert set(fields) == set(TrainConfig.model_fields)
        assert fields["r"].description == TrainConfig.model_fields["r"].description
    # Dagster makes each step section of a job's default config that section's default (a section a run sets
    # replaces it whole): the demo's; qlora_pipeline keeps the fields' own defaults.
    assert step_section("qlora_demo", "qlora_adapter").default_value["config"]["max_steps"] == 600  # configs/demo.yaml
    assert step_section("qlora_demo", "training_dataset").default_value["config"]["max_seq_len"] == 96
    data = step_fields("qlora_pipeline", "training_dataset")
    assert (data["format"].default_value, data["max_seq_len"].default_value) == ("auto", 256)
    section = step_section("qlora_pipeline", "training_dataset").default_value["config"]  # the fields' defaults
    assert (section["format"], section["max_seq_len"]) == ("auto", 256)
