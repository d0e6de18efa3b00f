"""Every bad input the README lists, through the headless command: the last line it prints, exactly.

The README's bad-input table is this module's output: `python -m tests.test_bad_inputs` prints it, and
`test_the_readme_table_is_this_output` fails when the two drift apart. Paths are relative (`data/...`, `models/...`)
because each case runs from its own folder, as a user would from a project folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from ops.core.paths import REPO_ROOT

pytestmark = pytest.mark.slow

ALPACA = {"instruction": "Say the word.", "input": "apple", "output": "apple"}


def rows(n: int) -> list[dict]:
    return [{"instruction": f"Count to {i}.", "output": " ".join(str(k) for k in range(i))} for i in range(1, n + 1)]


def jsonl(items: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in items).encode()


@dataclass(frozen=True)
class Case:
    """One bad input: what it is, the files it writes under the case folder, the run config, the expected last line."""

    what: str
    files: dict[str, bytes]
    config: dict
    expected: str
    base: Callable[[Path, Path], str] | None = None  # (tiny base dir, case folder) -> model_id
    env: dict[str, str] = field(default_factory=dict)  # environment variables the case sets


def data(source: str, **extra) -> dict:
    return {"ops": {"training_dataset": {"config": {"source": source, "max_rows": 80, "max_seq_len": 48, **extra}}}}


def drops_earlier_reasoning(model: Path) -> None:
    from tests.ops.data.conversations import EMBEDDED_DROPPING_REASONING

    (model / "chat_template.jinja").write_text(EMBEDDED_DROPPING_REASONING)


def conversation(i: int, thought: str = "") -> dict:
    return {"messages": [{"role": "user", "content": f"Count to {i}."},
                         {"role": "assistant", "content": thought + " ".join(str(k) for k in range(i))},
                         {"role": "user", "content": "Again."}, {"role": "assistant", "content": "Done."}]}


def mixture(sources: list[dict]) -> dict:
    return {"ops": {"training_dataset": {"config": {"mixture": sources, "max_rows": 80, "max_seq_len": 48}}}}


def copy_base(tiny: Path, folder: Path, change: Callable[[Path], None]) -> str:
    target = folder / "models" / "m"
    shutil.copytree(tiny, target)
    change(target)
    return "models/m"


def pickle_only(model: Path) -> None:
    for f in model.glob("*.safetensors"):
        f.rename(f.with_name("pytorch_model.bin"))


def with_auto_map(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))


CASES = [
    Case("a missing dataset file", {}, data("data/nope.jsonl"),
         "error: step training_dataset failed: DataError: dataset file data/nope.jsonl does not exist"),
    Case("an empty dataset", {"data/empty.jsonl": b""}, data("data/empty.jsonl"),
         "error: step training_dataset failed: DataError: dataset data/empty.jsonl is empty"),
    Case("a truncated JSONL line", {"data/x.jsonl": jsonl([ALPACA]) + b'{"instruction": "Say'}, data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: data/x.jsonl, line 2: invalid JSON at column 17 (Unterminated "
         "string); is the file truncated?"),
    Case("invalid UTF-8", {"data/x.jsonl": jsonl([ALPACA]) + b'{"text": "caf\xe9"}\n'}, data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: data/x.jsonl is not valid UTF-8: byte offset 83 "
         "(invalid continuation byte)"),
    Case("the wrong column names", {"data/x.jsonl": jsonl([{"question": "q", "answer": "a"}])}, data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: cannot detect the data format from row 1's columns "
         "['answer', 'question']; expected the columns of one of: alpaca (instruction, output[, input]), chat "
         "(messages), sharegpt (conversations), prompt_completion (prompt, completion), text (text). Map your columns "
         "onto these (the columns setting) or set the format explicitly."),
    Case("a mapped column that no row has", {"data/x.jsonl": jsonl([{"question": "q", "answer": "a"}])},
         data("data/x.jsonl", columns={"question": "instruction", "reply": "output"}),
         "error: step training_dataset failed: DataError: dataset data/x.jsonl: mapped column 'reply' (-> 'output') is "
         "in no row; its columns are ['answer', 'question']"),
    Case("a ShareGPT turn from an unknown speaker",
         {"data/x.jsonl": jsonl([{"conversations": [{"from": "human", "value": "Hi."}, {"from": "bot", "value": "Hello."}]}])},
         data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: dataset data/x.jsonl, row 1: conversation turn 2 is from 'bot'; "
         "the ShareGPT speakers are human, user, gpt, assistant, function_call, system, tool, observation, function "
         "(format sharegpt)"),
    Case("mixture shares that do not sum to 1", {},
         mixture([{"source": "data/a.jsonl", "share": 0.5}, {"source": "data/b.jsonl", "share": 0.3}]),
         "  ops.training_dataset.config.mixture: mixture shares must sum to 1, got 0.5 + 0.3 = 0.8"),
    Case("a misspelt key in a mixture source", {},
         mixture([{"source": "data/a.jsonl", "shar": 0.5}, {"source": "data/b.jsonl", "share": 0.5}]),
         "  ops.training_dataset.config.mixture.0.shar: unknown key; valid keys: columns, format, hub_revision, "
         "hub_split, max_rows, share, source"),
    Case("a bad row in a mixture's second source",
         {"data/a.jsonl": jsonl(rows(30)), "data/b.jsonl": jsonl([ALPACA, {"instruction": "Say it."}])},
         mixture([{"source": "data/a.jsonl"}, {"source": "data/b.jsonl"}]),
         "error: step training_dataset failed: DataError: dataset data/b.jsonl, row 2: missing required field "
         "'output' (format alpaca)"),
    Case("a row missing a field", {"data/x.jsonl": jsonl([ALPACA, {"instruction": "Say it."}])}, data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: dataset data/x.jsonl, row 2: missing required field "
         "'output' (format alpaca)"),
    Case("a row longer than any sane limit", {"data/x.jsonl": jsonl([ALPACA, {**ALPACA, "input": "a" * 1_000_000}])},
         data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: dataset data/x.jsonl, row 2: row is 1,000,018 characters "
         "long, over the limit of 1,000,000 (format alpaca)"),
    Case("one row only", {"data/x.jsonl": jsonl(rows(1))}, data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: too few rows for a train/eval split: 1 left of 1: the "
         "dataset has fewer than two rows"),
    Case("fifty copies of one row", {"data/x.jsonl": jsonl(rows(1) * 50)}, data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: too few rows for a train/eval split: 1 left of 50: 49 of 50 "
         "rows are exact duplicates of an earlier row (same prompt and response)"),
    Case("max_seq_len shorter than every prompt", {"data/x.jsonl": jsonl(rows(20))}, data("data/x.jsonl", max_seq_len=8),
         "error: step training_dataset failed: DataError: too few rows for a train/eval split: 0 left of 20: 20 rows "
         "were cut at max_seq_len=8 before their response began (longest prompt: 22 tokens); raise max_seq_len to "
         "at least 23"),
    Case("a chat row with an unknown role",
         {"data/x.jsonl": jsonl([{"messages": [{"role": "wizard", "content": "Cast."},
                                               {"role": "assistant", "content": "Done."}]}])}, data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: dataset data/x.jsonl, row 1: message 1 has role 'wizard'; "
         "the roles are system, user, assistant, tool (format chat)"),
    Case("a chat template that rewrites earlier turns (drops earlier reasoning, as Qwen3's does)",
         {"data/x.jsonl": jsonl([conversation(1), conversation(2, "<think>two numbers</think>")])},
         data("data/x.jsonl"),
         "error: step training_dataset failed: DataError: row 2: the chat template rewrites earlier turns: the prompt "
         "for the reply in message 4 does not start with the conversation as rendered through the reply before it "
         "(first difference at character 35: '<think>two numbers</think>0 1</s>' became "
         "'0 1</s><|user|>\\nAgain.\\n<|assistant|>\\n'); set train_on_turns: last to train on the last reply only",
         base=lambda tiny, folder: copy_base(tiny, folder, drops_earlier_reasoning)),
    Case("too few training rows for the blocking check", {"data/x.jsonl": jsonl(rows(20))},
         {"ops": {**data("data/x.jsonl", max_seq_len=256)["ops"],
                                          "training_dataset_checks": {"config": {"min_train_rows": 32}}}},
         "error: blocking check enough_rows on training_dataset failed: 18 train / 2 eval rows (need at least 32 / 4)"),
    Case("a bad value", {}, {"ops": {"qlora_adapter": {"config": {"r": 0}}}},
         "  ops.qlora_adapter.config.r: r must be > 0, got 0"),
    Case("an unknown key", {}, {"ops": {"qlora_adapter": {"config": {"lora_rank": 8, "max_steps": 10}}}},
         "  ops.qlora_adapter.config.lora_rank: unknown key; valid keys: alpha, batch_size, dropout, "
         "early_stopping_patience, eval_on_start, eval_steps, force, grad_accum, gradient_checkpointing, "
         "group_by_length, keep_best, learning_rate, logging_steps, lr_scheduler, max_grad_norm, max_restarts, "
         "max_steps, neftune_noise_alpha, nnodes, nproc_per_node, num_epochs, optim, packing, r, rdzv_endpoint, "
         "save_steps, seed, target_modules, warmup_ratio, warmup_steps, weight_decay"),
    Case("a training config without a length", {}, {"ops": {"qlora_adapter": {"config": {"r": 8}}}},
         "  ops.qlora_adapter.config: set max_steps or num_epochs: neither is set, and exactly one decides how long "
         "training runs"),
    Case("both max_steps and num_epochs", {}, {"ops": {"qlora_adapter": {"config": {"max_steps": 100, "num_epochs": 2}}}},
         "  ops.qlora_adapter.config: set max_steps or num_epochs, not both: got max_steps=100 and num_epochs=2.0"),
    Case("keep_best without a checkpoint at each evaluation", {},
         {"ops": {"qlora_adapter": {"config": {"max_steps": 100, "eval_steps": 50}}}},
         "  ops.qlora_adapter.config: keep_best needs a checkpoint at every evaluation: save_steps (100) must equal "
         "eval_steps (50), or set keep_best: false"),
    Case("no training processes", {}, {"ops": {"qlora_adapter": {"config": {"max_steps": 10, "nproc_per_node": 0}}}},
         "  ops.qlora_adapter.config.nproc_per_node: nproc_per_node must be >= 1, got 0"),
    Case("two machines without a rendezvous endpoint", {},
         {"ops": {"qlora_adapter": {"config": {"max_steps": 10, "nnodes": 2}}}},
         "  ops.qlora_adapter.config: nnodes=2 needs rdzv_endpoint (host:port of machine 0, reachable from every "
         "machine)"),
    Case("a rendezvous endpoint without a port", {},
         {"ops": {"qlora_adapter": {"config": {"max_steps": 10, "nnodes": 2, "rdzv_endpoint": "node0"}}}},
         "  ops.qlora_adapter.config.rdzv_endpoint: rdzv_endpoint must be host:port with a port in 1-65535, got "
         "'node0'"),
    Case("a misspelled resource key", {}, {"resources": {"mlflow": {"config": {"tracking_url": "http://x"}}}},
         "  resources.mlflow.config.tracking_url: unknown key; valid keys: artifact_location, experiment, "
         "registry_uri, tracking_uri, ui_url"),
    Case("an MLflow UI address without a scheme", {}, {"resources": {"mlflow": {"config": {"ui_url": "localhost:5000"}}}},
         "  resources.mlflow.config.ui_url: ui_url must be an http(s) address such as http://127.0.0.1:5000, got "
         "'localhost:5000'"),
    Case("a negative number of samples shown", {}, {"ops": {"adapter_evaluation": {"config": {"num_samples_shown": -1}}}},
         "  ops.adapter_evaluation.config.num_samples_shown: num_samples_shown must be >= 0, got -1"),
    Case("a model folder without config.json", {}, {},
         "error: steps quantized_base_model, training_dataset failed: BaseModelError: base model directory {folder}/models/m has no "
         "config.json: not a transformers model folder",
         base=lambda tiny, folder: copy_base(tiny, folder, lambda m: (m / "config.json").unlink())),
    Case("a model folder with only pickle weights", {}, {},
         "error: steps quantized_base_model, training_dataset failed: BaseModelError: base model directory {folder}/models/m holds only "
         "pickle weights (pytorch_model.bin); pickle can run code when loaded. Convert them to safetensors, or set "
         "allow_pickle_weights: true if you trust the source.",
         base=lambda tiny, folder: copy_base(tiny, folder, pickle_only)),
    Case("a model that needs its own code", {}, {},
         "error: steps quantized_base_model, training_dataset failed: BaseModelError: base model {folder}/models/m needs its own Python "
         "code to load (config.json has auto_map: AutoModelForCausalLM); that code would run on this machine. Read it, "
         "then set trust_remote_code: true on the base_model resource to allow it.",
         base=lambda tiny, folder: copy_base(tiny, folder, with_auto_map)),
    Case("a tracking URI that does not answer", {"data/x.jsonl": jsonl(rows(60))},
         {**data("data/x.jsonl", max_seq_len=256), "resources": {"mlflow": {"config": {"tracking_uri": "http://127.0.0.1:9"}}},
          "ops": {**data("data/x.jsonl", max_seq_len=256)["ops"],
                  "training_dataset_checks": {"config": {"min_train_rows": 8}},
                  "qlora_adapter": {"config": {"max_steps": 2}}}},
         "error: step qlora_adapter failed: TrackingServerUnavailable: MLflow tracking server http://127.0.0.1:9 does "
         "not answer ([Errno 111] Connection refused); start it, or point the mlflow resource's tracking_uri (or "
         "MLFLOW_TRACKING_URI) at one that runs"),
    Case("QLORA_INSTANCE naming no file", {}, {}, "error: QLORA_INSTANCE=deploy/dagster-prod.yaml: no such "
         "instance file (e.g. QLORA_INSTANCE=deploy/dagster.yaml)", env={"QLORA_INSTANCE": "deploy/dagster-prod.yaml"}),
]


def run_case(case: Case, folder: Path, tiny_base: Path, capsys) -> tuple[int, str]:
    """Write the case's files under `folder`, run the headless command from there; return (exit code, the lines
    it printed last: the error lines of a failed run, or the last line of a config error)."""
    from pipelines import run

    for name, content in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    model_id = case.base(tiny_base, folder) if case.base else str(tiny_base)
    config = {**case.config, "resources": {"base_model": {"config": {"model_id": model_id}},
                                           **case.config.get("resources", {})}}
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    code = run.main(["run.yaml"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ") and not line.startswith("error: invalid config")]
    return code, "\n".join(errors) if errors else (err[-1] if err else "")


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_each_bad_input_ends_with_its_one_line(case, tiny_base_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    code, last = run_case(case, tmp_path, tiny_base_dir, capsys)
    assert code in (1, 2)
    assert last == case.expected.format(folder=tmp_path.resolve())


def readme_rows() -> list[str]:
    """The bad-input table as it should stand in the README (model paths shown relative to the project)."""
    lines = ["| input | what the headless command prints last |", "| --- | --- |"]
    for case in CASES:
        text = case.expected.format(folder=".").strip().replace("|", "\\|")
        lines.append(f"| {case.what} | `{text}` |")
    return lines


def test_the_readme_table_is_this_output():
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [row for row in readme_rows() if row not in readme]
    assert not missing, "README's bad-input table differs from tests/test_bad_inputs.py; rows to update:\n" + "\n".join(missing)


if __name__ == "__main__":
    sys.stdout.write("\n".join(readme_rows()) + "\n")
