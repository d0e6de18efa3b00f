"""Every command the README shows is exercised: parsed by its program's own option parser, and run, either
here on a tiny model or by the named test that runs it. A README command that no entry below covers, or an
entry naming a test that does not exist, fails `test_every_readme_command_is_exercised`."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from tests.tiny import write_tiny_report

README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent
PROGRAM = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?(make|qlora|mlflow|dagster|python|pip)\s")
HERE = "tests/test_readme.py"

# README command (a regex matching the whole command, whitespace collapsed) -> the test that runs it. A
# test here runs the command itself (with a tiny config or registry); one elsewhere runs what it runs.
EXERCISED = {
    r"make demo": "tests/test_end_to_end.py::test_demo_pipeline_registers_a_loadable_model_and_reruns_from_cache",
    r"make test(-fast)?": None,  # the suite this file belongs to; parsed (make -n) only
    r"make ui": "tests/pipelines/test_dagster_dev.py::test_sensor_turned_on_in_dagster_dev_runs_once_per_data_change",
    r"make clean": f"{HERE}::test_make_clean_removes_the_data_home",
    r"\.venv/bin/python -m pipelines\.run configs/demo\.yaml":
        "tests/test_end_to_end.py::test_demo_pipeline_registers_a_loadable_model_and_reruns_from_cache",
    r"QLORA_HOME=\S+ python -m pipelines\.run <.*>":
        "tests/test_end_to_end.py::test_demo_pipeline_registers_a_loadable_model_and_reruns_from_cache",
    r"\.venv/bin/dagster job execute .*": f"{HERE}::test_dagster_job_execute_runs_the_pipeline",
    r"\.venv/bin/python -m ops\.train .*": "tests/ops/train/test_trainer.py::test_main_runs_standalone_from_a_yaml_config",
    r"pip install -e \.": None,  # the Makefile's install step; parsed by pip only
    r"(MLFLOW_TRACKING_URI=\S+ )?qlora .*": f"{HERE}::test_readme_console_session_runs_against_a_tiny_registry",
    r"mlflow models serve .*": "tests/ops/serving/test_serving.py::test_models_serve_answers_held_out_rows_as_the_evaluation_did",
    r"mlflow server": "tests/ops/serving/test_serving.py::test_cli_against_the_server",  # its `server` fixture runs it
    r"dagster instance concurrency set gpu \d+": f"{HERE}::test_dagster_instance_concurrency_set_runs",
    r"dagster dev": "tests/pipelines/test_dagster_dev.py::test_sensor_turned_on_in_dagster_dev_runs_once_per_data_change",
    # prints tests/test_bad_inputs.readme_rows(), which this test compares with the README
    r"python -m tests\.test_bad_inputs": "tests/test_bad_inputs.py::test_the_readme_table_is_this_output",
    # the harness on real subprocesses (fake benchmark modules); the real benchmarks are too slow for the suite
    r"make bench": "tests/benchmarks/test_harness.py::test_markdown_reports_each_benchmark",
    r"\.venv/bin/python -m benchmarks( \w+)*": "tests/benchmarks/test_harness.py::test_a_subset_rerun_keeps_the_other_results",
    r"\.venv/bin/python -m ops\.model\.memory_estimate --config \S+":
        "tests/ops/model/test_memory_estimate.py::test_cli_prints_the_estimate_of_a_recipe",
    r"make ui UI_PORT=\d+": "tests/ui/test_make_ui.py::test_make_ui_stops_and_leaves_no_process",
    # the UI tests' fixture serves the pipeline's sqlite store the same way
    # Scaling out: two runs on the production instance file, and the MLflow server script the fixture itself runs
    r"QLORA_INSTANCE=deploy/dagster\.yaml \.venv/bin/python -m pipelines\.run \S+":
        "tests/scale/test_shared_services.py::test_two_runs_on_postgres_share_the_gpu_pool_one_step_at_a_time",
    r"([A-Z_]+=\S+ )*deploy/mlflow-server\.sh .*":
        "tests/scale/test_services.py::test_mlflow_server_puts_artifacts_in_the_s3_bucket",
    r"\.venv/bin/mlflow server --backend-store-uri \S+":
        "tests/ui/test_browser.py::test_the_pipeline_pages_and_its_mlflow_run_show_what_a_person_needs",
}


@dataclass(frozen=True)
class Command:
    """One command as the README shows it (continuation lines joined) and the line it starts on."""

    text: str
    line: int
    expects_error: bool = False  # a console command whose shown output is `qlora: error: ...`

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def argv(self) -> list[str]:
        """The words after leading VAR=value assignments."""
        words = self.words
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        return words

    @property
    def normal(self) -> str:
        return " ".join(self.words)


def _join_continued(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    for number, text in lines:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1].rstrip() + " " + text.strip())
        else:
            joined.append((number, text))
    return joined


def split_readme(text: str) -> tuple[list[tuple[int, str]], list[tuple[str, list[tuple[int, str]]]]]:
    """(prose lines, fenced blocks as (language, lines)), each line with its number."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```(\w*)", line)
        if fence and block is None:
            block = (fence[1], [])
        elif line.startswith("```"):
            blocks.append(block)
            block = None
        elif block is None:
            prose.append((number, line))
        else:
            block[1].append((number, line))
    return prose, blocks


def inline_spans(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Inline code spans of the prose (they may wrap a line), whitespace collapsed, with their first line."""
    flat = "\n".join(line for _, line in prose)
    starts = [number for number, line in prose for _ in range(len(line) + 1)]
    return [(starts[m.start()], " ".join(m[1].split())) for m in re.finditer(r"`([^`]+)`", flat)]


def readme_commands(text: str) -> list[Command]:
    """Commands in bash/console blocks (console: the `$ ` lines) and inline code spans starting with a program."""
    prose, blocks = split_readme(text)
    commands = [c for lang, body in blocks for c in _block_commands(lang, body)]
    commands += [Command(span, line) for line, span in inline_spans(prose) if PROGRAM.match(span)]
    unique = {c.normal: c for c in reversed(commands)}  # the first place each command appears
    # A bare span that begins a command shown in full elsewhere (`mlflow models serve`) only names it.
    full = [c for c in unique.values()
            if not any(len(o.words) > len(c.words) and o.words[:len(c.words)] == c.words for o in unique.values())]
    return sorted(full, key=lambda c: c.line)


def _block_commands(lang: str, body: list[tuple[int, str]]) -> list[Command]:
    if lang in ("bash", "sh", "shell"):
        return [Command(t.strip(), n) for n, t in _join_continued(body) if t.strip() and not t.lstrip().startswith("#")]
    if lang != "console":
        return []
    found: list[list] = []  # [line, command text, output lines]
    for n, t in body:
        if found and found[-1][1].endswith("\\"):
            found[-1][1] = found[-1][1][:-1].rstrip() + " " + t.strip()
        elif t.startswith("$ "):
            found.append([n, t[2:].strip(), []])
        elif found:
            found[-1][2].append(t)
    return [Command(text, n, any(o.startswith("qlora: error:") for o in out)) for n, text, out in found]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def exercising_test(command: Command) -> tuple[bool, str | None]:
    """(whether an entry covers the command, the test that runs it or None for parse-only entries)."""
    found = [test for pattern, test in EXERCISED.items() if re.fullmatch(pattern, command.normal)]
    return (bool(found), found[0] if found else None)


def defined_tests(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


COMMANDS = readme_commands(README.read_text())


def test_readme_commands_are_found():
    """The extractor sees the README's commands (guards against a README restructure hiding them all)."""
    programs = {c.argv[0].rsplit("/", 1)[-1] for c in COMMANDS}
    assert {"make", "qlora", "dagster", "mlflow", "python"} <= programs, programs
    assert any(c.expects_error for c in COMMANDS) and not all(c.expects_error for c in COMMANDS)


def test_every_readme_command_is_exercised():
    uncovered = [f"README line {c.line}: {c.text}" for c in COMMANDS if not exercising_test(c)[0]]
    assert not uncovered, "README commands no test exercises (add a test and an EXERCISED entry):\n" + "\n".join(uncovered)
    for node in {t for t in EXERCISED.values() if t}:
        path, name = node.split("::")
        assert name in defined_tests(REPO_ROOT / path), f"EXERCISED names {node}, which does not exist"


def click_parse(group, argv: list[str]) -> str:
    """Parse argv with a click group's own parser, down to the leaf command; its name. Raises click errors."""
    import click

    ctx, command = group.make_context(argv[0], argv[1:]), group
    args = ctx._protected_args + ctx.args
    while isinstance(command, click.Group) and args:
        name, command, rest = command.resolve_command(ctx, args)
        ctx = command.make_context(name, rest, parent=ctx)
        args = ctx._protected_args + ctx.args if isinstance(command, click.Group) else []
    return command.name


def parse(command: Command) -> None:
    """Check the command's options with its program's own parser (no work is done)."""
    argv = command.argv
    program = argv[0].rsplit("/", 1)[-1]
    if program == "qlora":
        from ops.registry.cli import build_parser

        build_parser().parse_args(argv[1:])
    elif program == "dagster":
        from dagster._cli import create_dagster_cli

        click_parse(create_dagster_cli(), argv)
    elif program == "mlflow":
        from mlflow.cli import cli

        click_parse(cli, argv)
    elif program == "make":
        proc = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    elif program == "pip":
        from pip._internal.commands import create_command

        options, args = create_command(argv[1]).parse_args(argv[2:])
        assert args or options.editables
    elif program == "python":
        import importlib.util

        assert argv[1] == "-m" and importlib.util.find_spec(argv[2]) is not None, argv
        paths = [a for a in argv[3:] if re.fullmatch(r"[\w./-]+\.(ya?ml|py)", a) and "/" in a]
        assert all((REPO_ROOT / p).is_file() for p in paths), paths
    elif program == "mlflow-server.sh":  # deploy/ script: its arguments go to `mlflow server`
        from mlflow.cli import cli

        assert (REPO_ROOT / argv[0]).is_file(), argv[0]
        click_parse(cli, ["mlflow", "server", *argv[1:]])
    else:
        raise AssertionError(f"no parser for {program}")


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize("command", COMMANDS, ids=[f"line{c.line}" for c in COMMANDS])
def test_readme_command_parses(command, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # click checks that paths such as configs/demo.yaml exist
    parse(command)


@pytest.mark.slow  # starts a subprocess
def test_the_old_dagster_invocation_does_not_parse():
    """The command the README used to show: the installed Dagster has no `-w` on `job execute`."""
    import click

    with pytest.raises(click.UsageError, match="No such option '-w'"):
        parse(Command(".venv/bin/dagster job execute -w workspace.yaml -j qlora_pipeline -c configs/demo.yaml", 0))


def test_readme_rest_bodies_are_accepted_by_the_model_signature():
    """The request bodies the README shows go through MLflow's own parsing and the model's signature and
    render as alpaca prompts with an input section."""
    import json

    from mlflow.models.utils import _enforce_schema
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    from ops.data.prompt_formats import render_request
    from ops.serving.pyfunc_model import as_requests, signature

    spans = [span for _, span in inline_spans(split_readme(README.read_text())[0])]
    bodies = [json.loads(s) for s in spans if re.match(r'\{"(inputs|dataframe_\w+)"', s)]
    assert bodies
    for body in bodies:
        frame = _enforce_schema(infer_and_parse_data(body, signature().inputs), signature().inputs)
        for request in as_requests(frame):
            assert "### Input:" in render_request(request, "alpaca", tokenizer=None)


def run_shell(command: str, env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a README command with bash; `.venv/bin/` is the environment running the tests (the README's venv
    is the one `make` creates in the checkout)."""
    command = re.sub(r"(^|\s)\.venv/bin/", rf"\g<1>{BIN}/", command)
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def project_env(**extra: str) -> dict:
    """The venv first on PATH, and this checkout's packages importable from any directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME")}
    return {**env, "PATH": f"{BIN}:{env.get('PATH', '')}", "PYTHONPATH": str(REPO_ROOT), **extra}


@pytest.mark.slow  # starts a subprocess
def test_make_clean_removes_the_data_home(tmp_path):
    (command,) = [c for c in COMMANDS if c.normal == "make clean"][:1]
    home = tmp_path / "home"
    (home / "artifacts").mkdir(parents=True)
    proc = run_shell(f"{command.text} QLORA_HOME={home}", project_env(), REPO_ROOT, timeout=60)
    assert proc.returncode == 0 and not home.exists(), proc.stderr


@pytest.mark.slow  # starts a subprocess
def test_dagster_instance_concurrency_set_runs(tmp_path):
    (command,) = [c for c in COMMANDS if c.normal.startswith("dagster instance concurrency set")][:1]
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    proc = run_shell(command.text, project_env(DAGSTER_HOME=str(home)), tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_dagster_job_execute_runs_the_pipeline(tmp_path, tiny_base_dir):
    """The README's command as written, with the demo recipe cut to the tiny base, a few steps, in one process."""
    (command,) = [c for c in COMMANDS if "dagster job execute" in c.normal][:1]
    config = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    config["resources"]["base_model"]["config"]["model_id"] = str(tiny_base_dir)
    config["ops"]["training_dataset"]["config"].update(max_rows=120, max_seq_len=64)
    config["ops"]["qlora_adapter"]["config"].update(max_steps=3, batch_size=8, save_steps=3, logging_steps=1,
                                                   warmup_steps=1)
    config["ops"]["adapter_evaluation"]["config"].update(num_generation_examples=4, max_new_tokens=4)
    config["execution"] = {"config": {"in_process": {}}}  # one process: minutes of subprocess start-up saved
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(config))
    text = command.text.replace("configs/demo.yaml", str(small))
    assert text != command.text
    home = tmp_path / "home"
    proc = run_shell(text, project_env(QLORA_HOME=str(home)), REPO_ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow import MlflowClient

    versions = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").search_model_versions("name = 'qlora-demo'")
    assert [int(v.version) for v in versions] == [1]


@pytest.mark.slow
def test_readme_console_session_runs_against_a_tiny_registry(tmp_path, tiny_quantized, tiny_adapter):
    """The python block and every `$ qlora ...` line, for real, against a data home holding a tiny
    `qlora-demo` (paths under /tmp/qdemo moved into the test's folder); error examples must fail."""
    from ops.core.paths import default_tracking_uri
    from ops.registry.register import register_adapter
    from ops.registry.spec import RegistrySpec

    home = tmp_path / ".qlora"  # where the python block's sqlite:///.qlora/mlflow.db points from tmp_path
    report = tmp_path / "report.json"
    write_tiny_report(report)
    register_adapter(tracking_uri=default_tracking_uri(home), registry_uri=None, artifact_location=None,
                     experiment="readme", spec=RegistrySpec(model_name="qlora-demo", alias="candidate"),
                     adapter_dir=tiny_adapter[0] / "adapter", base_model_dir=tiny_quantized[0] / "model",
                     prompt_format="alpaca", params={}, metrics={"tuned": {"eval_loss": 2.0}}, report_path=report,
                     tags={"base_model_id": "embedded:tiny-llama"}, log=lambda _: None)
    env = project_env(QLORA_HOME=str(home))
    (block,) = python_blocks(README.read_text())
    proc = subprocess.run([sys.executable, "-c", block], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for command in [c for c in COMMANDS if c.argv[0] == "qlora"]:
        proc = run_shell(command.text.replace("/tmp/qdemo", str(tmp_path / "qdemo")), env, tmp_path)
        assert (proc.returncode == 1) == command.expects_error, (command.text, proc.stdout[-1000:], proc.stderr[-2000:])
        if command.expects_error:
            assert proc.stderr.strip().splitlines()[-1].startswith("qlora: error:"), proc.stderr[-1000:]
