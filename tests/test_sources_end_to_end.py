"""A ShareGPT file and a two-source mixture through the headless command, and the mixture's config through Dagster."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow

WORDS = ("apple", "river", "stone", "tiger", "zebra", "bridge", "quartz", "hammer", "desert", "forest")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sharegpt_rows(n: int) -> list[dict]:
    return [{"conversations": [{"from": "system", "value": "Answer in one word."},
                               {"from": "human", "value": f"Which word is number {i}?"},
                               {"from": "gpt", "value": WORDS[i % len(WORDS)]}]} for i in range(n)]


def qa_rows(n: int) -> list[dict]:
    return [{"question": f"Spell the word {WORDS[i % len(WORDS)]} for case {i}.",
             "answer": " ".join(WORDS[i % len(WORDS)])} for i in range(n)]


def dataset_summary(qlora_home: Path) -> dict:
    (summary,) = (qlora_home / "artifacts" / "training_dataset").glob("*/_COMPLETE.json")
    return json.loads(summary.read_text())


def run_headless(config: dict, tmp_path: Path) -> int:
    from pipelines import run

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return run.main([str(path)])


def test_a_sharegpt_file_trains_and_registers(tiny_base_dir, tmp_path, qlora_home, capsys):
    data = write_jsonl(tmp_path / "sharegpt.jsonl", sharegpt_rows(60))
    config = tiny_run_config("sources-sharegpt", tiny_base_dir, data={"source": str(data)})
    assert run_headless(config, tmp_path) == 0, capsys.readouterr().err[-3000:]
    assert capsys.readouterr().out.strip().splitlines()[-1] == "model_uri: models:/sources-sharegpt/1"
    summary = dataset_summary(qlora_home)
    assert summary["format"] == "chat" and summary["system_message"] == "Answer in one word."
    assert summary["sources"][0]["format"] == "sharegpt" and summary["rows"] == 60


def test_a_two_source_mixture_trains_with_its_shares(tiny_base_dir, tmp_path, qlora_home, capsys):
    first = write_jsonl(tmp_path / "sharegpt.jsonl", sharegpt_rows(90))
    second = write_jsonl(tmp_path / "qa.jsonl", qa_rows(50))
    mixture = [{"source": str(first), "share": 0.6},
               {"source": str(second), "share": 0.4, "columns": {"question": "instruction", "answer": "output"}}]
    config = tiny_run_config("sources-mixture", tiny_base_dir, data={"mixture": mixture, "max_rows": 100})
    assert run_headless(config, tmp_path) == 0, capsys.readouterr().err[-3000:]
    assert capsys.readouterr().out.strip().splitlines()[-1] == "model_uri: models:/sources-mixture/1"
    summary = dataset_summary(qlora_home)
    assert summary["format"] == "chat"  # the alpaca-mapped source joins the chat as one-turn conversations
    assert [(s["format"], s["rows_drawn"], s["rows"]) for s in summary["sources"]] == [("sharegpt", 60, 60),
                                                                                     ("alpaca", 40, 40)]
    assert [s["share"] for s in summary["sources"]] == [0.6, 0.4]
    assert sum(s["tokens"] for s in summary["sources"]) == summary["tokens"]


def test_dagster_takes_a_mixture_config_and_shows_each_source(tiny_base_dir, tmp_path):
    from assets import PIPELINE_ASSETS
    from pipelines.definitions import RESOURCES
    from resources import BaseModelResource

    a = write_jsonl(tmp_path / "qa.jsonl", qa_rows(30))
    b = write_jsonl(tmp_path / "more.jsonl", [{"prompt": f"Count to {i}.", "completion": " ".join(map(str, range(i)))}
                                               for i in range(1, 21)])
    mixture = [{"source": str(a), "columns": {"question": "prompt", "answer": "completion"}, "max_rows": 10},
               {"source": str(b)}]
    config = {"ops": {"training_dataset": {"config": {"mixture": mixture, "max_seq_len": 64}}}}
    resources = {**RESOURCES, "base_model": BaseModelResource(model_id=str(tiny_base_dir))}
    result = dg.materialize(PIPELINE_ASSETS, resources=resources, run_config=config, selection=["training_dataset"])
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}
    assert (meta["rows/1"], meta["rows/2"], meta["rows"]) == (10, 20, 30)
    assert meta["tokens/1"] + meta["tokens/2"] == meta["tokens"]
    assert f"| {a} | prompt_completion | 30 | 10 | 10 |" in meta["sources"]
