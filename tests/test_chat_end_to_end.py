"""Multi-turn chat data through the headless command on the tiny Llama with the embedded chat template: every
assistant turn is trained on, and the registered model answers a conversation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from ops.core.paths import REPO_ROOT
from ops.data.synthetic import write_jsonl
from ops.data.synthetic_chat import generate_conversations
from tests.run_configs import tiny_run_config

pytestmark = pytest.mark.slow


def test_conversations_train_on_every_assistant_turn_and_the_model_answers_one(tiny_base_dir, tmp_path, qlora_home):
    import mlflow

    from ops.data.preparation import IGNORE_INDEX, load_prepared
    from ops.model.loading import load_tokenizer

    rows = generate_conversations(150, seed=5)
    write_jsonl(rows, tmp_path / "chat.jsonl")
    config = tiny_run_config("tiny-chat-turns", tiny_base_dir, data={"source": str(tmp_path / "chat.jsonl"),
                                                                     "max_seq_len": 160})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "QLORA_HOME": str(qlora_home), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "pipelines.run", str(tmp_path / "run.yaml")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "model_uri: models:/tiny-chat-turns/1"

    (dataset_dir,) = (qlora_home / "artifacts" / "training_dataset").iterdir()
    splits = load_prepared(dataset_dir)
    examples = list(splits["train"]) + list(splits["eval"])
    assert len(examples) == 120
    eos = load_tokenizer(tiny_base_dir).eos_token_id  # the embedded template closes every assistant turn with it
    for example in examples:  # one trained stop per reply: every reply, not the last one alone
        trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
        assert trained.count(eos) == example["prompt"].count("</s>") + 1 >= 2

    mlflow.set_tracking_uri(f"sqlite:///{qlora_home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/tiny-chat-turns/1")
    conversation = rows[0]["messages"][:3] + [{"role": "user", "content": "How many words are there?"}]
    answers = model.predict([{"messages": conversation}], params={"max_new_tokens": 4})
    assert len(answers) == 1 and isinstance(answers[0], str)
