"""Progress bars (ops.core.progress): drawn on a terminal only, with lines printed above them, in training and
evaluation. A terminal is faked with a StringIO whose isatty() is true: tqdm decides by that alone."""

from __future__ import annotations

import functools
import io
import re

import pytest

from ops.core.progress import bars_to, progress, write


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def frames(output: str) -> list[str]:
    """What the terminal showed, frame by frame: tqdm redraws a bar after a carriage return."""
    return [part for part in re.split(r"[\r\n]", output) if part.strip()]


def test_a_bar_is_drawn_on_a_terminal_and_not_into_a_file_or_pipe():
    term, piped = FakeTerminal(), io.StringIO()
    for _ in progress(range(3), desc="eval", unit="batch", file=term, mininterval=0):
        pass
    for _ in progress(range(3), desc="eval", unit="batch", file=piped, mininterval=0):
        pass
    assert any(frame.startswith("eval:") and "3/3" in frame for frame in frames(term.getvalue())), term.getvalue()
    assert piped.getvalue() == ""


def test_a_line_written_during_a_bar_stands_on_its_own_line():
    term = FakeTerminal()
    with bars_to(term):
        bar = progress(total=3, desc="train", mininterval=0)
        bar.update(1)
        write("step 1/3  loss 6.4797")
        bar.update(2)
        bar.close()
    # the bar is cleared first (\r), then the line ends with a newline, then the bar is redrawn after it
    assert "\rstep 1/3  loss 6.4797\n" in term.getvalue(), repr(term.getvalue())
    assert "2/3" not in term.getvalue().split("step 1/3")[0]


def test_training_shows_step_total_loss_and_tokens_per_second_from_step_one(tiny_quantized, tiny_dataset, cpu,
                                                                              tmp_path, monkeypatch):
    from ops.train import callbacks
    from ops.train.spec import TrainSpec
    from ops.train.trainer import train_adapter
    from tests.tiny import TINY_RECIPE

    # every update drawn (tqdm draws at most every 0.1 s by default; tiny steps are faster than that)
    monkeypatch.setattr(callbacks, "progress_bar", functools.partial(progress, mininterval=0))
    term = FakeTerminal()
    spec = TrainSpec(max_steps=3, batch_size=8, save_steps=3, logging_steps=3, warmup_steps=1, **TINY_RECIPE)
    with bars_to(term):
        train_adapter(tiny_quantized[0] / "model", tiny_dataset[0], tmp_path, spec, cpu, log=write)
    shown = frames(term.getvalue())
    first = [f for f in shown if f.startswith("train:") and "1/3" in f]
    # step 1 comes before the first logged step (3): its loss is the Trainer's running loss, not a logged one
    assert first and re.search(r"loss \d+\.\d{4}  [\d,]+ tokens/s\]$", first[-1]), shown
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", first[-1])  # elapsed < time left
    assert any(f.startswith("train: 100%") and "3/3" in f for f in shown), shown
    assert any(f.startswith("step 3/3  loss ") for f in shown), shown  # the step's line, on its own line


def test_generation_shows_a_bar_over_its_batches(tiny_quantized, cpu, monkeypatch):
    from ops.model import generation
    from ops.model.generation import encode_prompts, generate_ids
    from ops.model.loading import load_quantized_model, load_tokenizer

    monkeypatch.setattr(generation, "progress", functools.partial(progress, mininterval=0))

    model_dir = tiny_quantized[0] / "model"
    tokenizer = load_tokenizer(model_dir)
    model = load_quantized_model(model_dir, cpu, lambda _: None)
    prompts = encode_prompts(tokenizer, ["What is red?", "Name a fruit.", "Count to three."])
    term = FakeTerminal()
    with bars_to(term):
        generate_ids(model, tokenizer, prompts, max_new_tokens=2, batch_size=1, desc="tuned generate")
    assert any(f.startswith("tuned generate:") and "3/3" in f for f in frames(term.getvalue())), term.getvalue()


@pytest.mark.parametrize("stream", [io.StringIO(), None])
def test_without_a_terminal_nothing_is_drawn(stream, capsys):
    with bars_to(stream):
        for _ in progress(range(2), desc="eval", mininterval=0):
            pass
    assert capsys.readouterr().err == "" and (stream is None or stream.getvalue() == "")
