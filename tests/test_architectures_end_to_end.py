"""The whole pipeline, headless, on tiny Qwen2, Mistral and GPT-NeoX bases: registered, then loaded and served.

tests/ops/test_architectures.py runs every op on each architecture; this runs them as a user does, through
`python -m pipelines.run` and the registry, down to `mlflow.pyfunc.load_model(<printed model_uri>)`. The Llama case
is the demo's own end-to-end test (tests/test_end_to_end.py, with the MLP-120 tiny Llama of tests/conftest.py).
"""

from __future__ import annotations

import pytest
import yaml

from tests.ops.conftest import tokenizer  # noqa: F401  (the embedded tokenizer fixture)
from tests.ops.model.test_architectures import ARCHITECTURES, build_base

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU:UserWarning")]


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "gpt_neox"])
def test_the_pipeline_registers_a_model_that_loads_and_answers(arch, tokenizer, tmp_path, capsys):
    import mlflow

    from ops.core.paths import default_tracking_uri
    from pipelines import run

    config_cls, model_cls, fields, *_ = ARCHITECTURES[arch]
    base = build_base(tmp_path / "base", tokenizer, config_cls, model_cls, fields)
    config = {
        "resources": {"base_model": {"config": {"model_id": str(base)}},
                      "registered_model": {"config": {"model_name": f"tiny-{arch}"}}},
        "ops": {
            "training_dataset": {"config": {"max_rows": 120, "max_seq_len": 64}},
            "training_dataset_checks": {"config": {"min_train_rows": 8}},
            "qlora_adapter": {"config": {"max_steps": 20, "batch_size": 8, "learning_rate": 5e-3, "warmup_steps": 2, "lr_scheduler": "cosine",
                                         "save_steps": 20, "logging_steps": 10}},
            "adapter_evaluation": {"config": {"num_generation_examples": 4, "max_new_tokens": 4}},
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run.main([str(path)]) == 0, capsys.readouterr().err[-3000:]
    model_uri = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("model_uri: ")
    assert model_uri == f"models:/tiny-{arch}/1"

    mlflow.set_tracking_uri(default_tracking_uri())
    model = mlflow.pyfunc.load_model(model_uri)
    answers = model.predict([{"instruction": "How many words are there?", "input": "butter thunder window"}],
                            params={"max_new_tokens": 4})
    assert len(answers) == 1 and isinstance(answers[0], str)
