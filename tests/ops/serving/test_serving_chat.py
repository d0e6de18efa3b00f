"""A model trained on chat data with one system message: served requests get that system message by default and
are answered as the evaluation answered the same held-out rows (a real prepare, train, evaluate, register, load)."""

from __future__ import annotations

import json

import mlflow
import pytest

from ops.data.preparation import prepare_dataset
from ops.data.sources import load_rows
from ops.data.spec import DataSpec
from ops.evaluation.evaluator import evaluate_adapter
from ops.evaluation.spec import EvalSpec
from ops.model.loading import load_tokenizer
from ops.registry.register import mlflow_uris, register_adapter
from ops.registry.spec import RegistrySpec
from ops.train.spec import TrainSpec
from ops.train.trainer import train_adapter
from tests.ops.serving.test_serving import GENERATION, HELD_OUT, TRAINED, held_out_requests

# Chat prompts are longer than alpaca's; at TRAINED's 200 steps the MLP-120 tiny model answered 'zero' to all 8 rows.
CHAT_TRAINED = {**TRAINED, "max_steps": 400, "save_steps": 400}

pytestmark = pytest.mark.slow
SYSTEM = "Answer with one word."


@pytest.fixture(scope="module")
def chat_model(tiny_quantized, cpu, tmp_path_factory) -> dict:
    """The bundled questions as chat rows with one system message, through every step on the tiny base."""
    root = tmp_path_factory.mktemp("chat-model")
    rows = [{"messages": [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": f"{r['instruction']}\n{r['input']}"},
                          {"role": "assistant", "content": r["output"]}]} for r in load_rows(DataSpec())[:160]]
    source = root / "chat.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model_dir = tiny_quantized[0] / "model"
    tokenizer = load_tokenizer(model_dir)
    stats = prepare_dataset(DataSpec(source=str(source), max_seq_len=64), tokenizer, root / "data", log=lambda _: None)
    train_adapter(model_dir, root / "data", root / "adapter", TrainSpec(**CHAT_TRAINED), cpu, log=lambda _: None)
    report = evaluate_adapter(model_dir, root / "adapter" / "adapter", root / "data",
                              EvalSpec(num_generation_examples=HELD_OUT, num_samples_shown=HELD_OUT, **GENERATION), cpu,
                              log=lambda _: None)
    (root / "report.json").write_text(report.model_dump_json())
    uri = f"sqlite:///{root / 'mlflow.db'}"
    info = register_adapter(tracking_uri=uri, registry_uri=None, artifact_location=str(root / "artifacts"),
                            experiment="chat", spec=RegistrySpec(model_name="tiny-chat"),
                            adapter_dir=root / "adapter" / "adapter", base_model_dir=model_dir, prompt_format="chat",
                            system_message=stats.system_message, params={}, metrics={},
                            report_path=root / "report.json", tags={}, log=lambda _: None)
    return {"uri": uri, "info": info, "stats": stats, "report": report, "rows": rows, "tokenizer": tokenizer}


def test_chat_model_answers_held_out_rows_as_the_evaluation_did(chat_model):
    assert chat_model["stats"].system_message == SYSTEM
    requests, answers = held_out_requests(chat_model["report"], chat_model["rows"], "chat", chat_model["tokenizer"],
                                          ("messages",))
    assert len(set(answers)) > 1, answers  # answers that depend on the question, or equality would prove nothing
    with mlflow_uris(chat_model["uri"], chat_model["uri"]):
        model = mlflow.pyfunc.load_model(chat_model["info"].model_uri)
    assert model.unwrap_python_model().system_message == SYSTEM
    # The user turn alone: the model adds the system message every training row had.
    prompts = [{"prompt": r["messages"][1]["content"]} for r in requests]
    assert model.predict(prompts, params=GENERATION) == answers
    # Whole conversations, system message included, up to the user turn.
    assert model.predict([{"messages": r["messages"][:2]} for r in requests], params=GENERATION) == answers
