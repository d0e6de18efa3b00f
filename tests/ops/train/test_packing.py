"""Packing and length grouping on the tiny 4-bit model with LoRA: real forwards, real Trainer steps, real samplers.

The claim under test: a packed batch computes, example for example, what the padded batch computes (per-example
losses within 1e-4, for each attention implementation packing allows), with less padding; and length grouping
really changes the batches the Trainer draws.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import Trainer

from ops.data.preparation import load_prepared, prepare_dataset
from ops.data.spec import DataSpec
from ops.data.synthetic import generate_variable_length, write_jsonl
from ops.data.tokens import IGNORE_INDEX, MODEL_COLUMNS, pad_batch
from ops.model.device import DeviceInfo
from ops.model.loading import load_quantized_model, load_tokenizer
from ops.train.packing import (
    LENGTH_COLUMN,
    BatchTokens,
    batch_collator,
    check_packing_support,
    pack_batch,
    pack_into_rows,
    packed_logprob_gaps,
)
from ops.train.spec import TrainSpec
from ops.train.trainer import build_training_args, train_adapter
from tests.tiny import quantize_fp32

FP32_CPU = DeviceInfo("cpu", "packing-test", torch.float32, "float32: the same numbers on every CPU kind")
pytestmark = pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU:UserWarning")


@pytest.fixture(scope="module")
def base_fp32(tiny_base_dir, tmp_path_factory):
    """The tiny base in NF4 with fp32 compute: packed and padded sums agree to ~1e-6 on any CPU."""
    out = tmp_path_factory.mktemp("packing-base")
    quantize_fp32(tiny_base_dir, out)
    return out


@pytest.fixture(scope="module")
def variable_dataset(base_fp32, tmp_path_factory):
    """400 rows with outputs of 1 to 60 words (~18 to ~80 tokens), prepared with the tiny tokenizer; enough rows that
    LengthGroupedSampler sorts megabatches of 88 (it sorts batch_size * min(rows // (4 * batch_size), 50))."""
    folder = tmp_path_factory.mktemp("variable-data")
    write_jsonl(generate_variable_length(400, max_words=60, seed=7), folder / "rows.jsonl")
    out = folder / "prepared"
    prepare_dataset(DataSpec(source=str(folder / "rows.jsonl"), max_seq_len=128), load_tokenizer(base_fp32), out,
                    log=lambda _: None)
    return out


def rows_of(dataset_dir, n: int, split: str = "train") -> list[dict]:
    data = load_prepared(dataset_dir)[split].select_columns(list(MODEL_COLUMNS))
    return [data[i] for i in range(n)]


def lora_model(model_dir, attention: str):
    """The 4-bit base with LoRA (dropout off, B randomised so the adapter changes the output), gradient
    checkpointing on, in training mode: what a training step runs."""
    model = load_quantized_model(model_dir, FP32_CPU)
    model.set_attn_implementation(attention)
    check_packing_support(model, FP32_CPU)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    return model


def token_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of each position's prediction of the next label (nats), IGNORE_INDEX where there is none."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                             reduction="none")


def per_example_packed(model, rows: list[dict]) -> list[torch.Tensor]:
    """Each example's target-token losses, computed in one packed batch and split back out along the rows."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in pack_batch(rows, pad_id=0).items()}
    losses = token_losses(model, batch)
    starts = (batch["position_ids"] == 0).nonzero().tolist()
    out, used = [], set()
    for row in rows:  # find each example by its tokens at a segment start
        n = len(row["input_ids"])
        for r, c in starts:
            if (r, c) not in used and batch["input_ids"][r, c:c + n].tolist() == list(row["input_ids"]):
                used.add((r, c))
                target = batch["labels"][r, c + 1:c + n] != IGNORE_INDEX
                out.append(losses[r, c:c + n - 1][target])
                break
    return out


def per_example_alone(model, rows: list[dict]) -> list[torch.Tensor]:
    out = []
    for row in rows:
        batch = {k: v.to(next(model.parameters()).device) for k, v in pad_batch([row], pad_id=0).items()}
        losses = token_losses(model, batch)[0, :-1]
        out.append(losses[batch["labels"][0, 1:] != IGNORE_INDEX])
    return out


def test_variable_length_rows_span_1_to_200_words_and_are_learnable_sequences():
    from ops.data.synthetic import WORDS

    rows = generate_variable_length(600)
    counts = [len(r["output"].split()) for r in rows]
    assert min(counts) <= 5 and max(counts) >= 195 and all(1 <= c <= 200 for c in counts)
    assert rows == generate_variable_length(600)  # seeded
    row = rows[0]
    start = WORDS.index(row["input"])
    assert row["output"].split()[:2] == [WORDS[(start + 1) % len(WORDS)], WORDS[(start + 2) % len(WORDS)]]
    assert row["instruction"] == f"List the {counts[0]} words that follow."
    with pytest.raises(ValueError, match="need 1 <= min_words <= max_words, got min_words=0, max_words=5"):
        generate_variable_length(3, min_words=0, max_words=5)


def test_pack_into_rows_is_first_fit_decreasing():
    assert pack_into_rows([5, 9, 3, 4, 1], capacity=9) == [[1], [0, 3], [2, 4]]
    rows = pack_into_rows([7, 2, 2, 6, 1, 5, 3], capacity=7)
    assert sorted(i for r in rows for i in r) == list(range(7))
    assert all(sum([7, 2, 2, 6, 1, 5, 3][i] for i in r) <= 7 for r in rows) and len(rows) == 4  # 26 tokens, 4 rows
    with pytest.raises(ValueError, match="an example of 8 tokens does not fit a packed row of 7"):
        pack_into_rows([8], capacity=7)


def test_pack_batch_restarts_positions_masks_boundaries_and_pads_the_tail():
    rows = [{"input_ids": [1, 10, 11, 12], "labels": [-100, -100, 11, 12]},
            {"input_ids": [1, 20], "labels": [-100, 20]},
            {"input_ids": [1, 30, 31], "labels": [5, 30, 31]}]  # a first label that is set: masked in the pack
    batch = pack_batch(rows, pad_id=3)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention mask: positions say it all
    assert batch["input_ids"].tolist() == [[1, 10, 11, 12], [1, 30, 31, 3], [1, 20, 3, 3]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 0, 1]]
    assert batch["labels"].tolist() == [[-100, -100, 11, 12], [-100, 30, 31, -100], [-100, 20, -100, -100]]
    two = pack_batch(rows[1:], pad_id=3)
    assert two["input_ids"].tolist() == [[1, 30, 31], [1, 20, 3]]


def test_collator_counts_real_tokens_and_padding():
    rows = [{"input_ids": [1] * 8, "labels": [1] * 8}] + [{"input_ids": [1] * 2, "labels": [1] * 2}] * 4
    padded, packed = BatchTokens(), BatchTokens()
    batch_collator(0, padded, packing=False)(rows)
    batch_collator(0, packed, packing=True)(rows)
    assert padded.tokens == packed.tokens == 16
    assert (padded.slots, packed.slots) == (40, 16)  # 5 rows of 8 against 2 rows of 8 (8 | 2+2+2+2)
    assert padded.padding_share() == pytest.approx(0.6) and packed.padding_share() == 0.0
    assert BatchTokens().padding_share() == 0.0


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_per_example_losses_equal_unpacked(base_fp32, variable_dataset, attention):
    model = lora_model(base_fp32, attention)
    assert model.config._attn_implementation == attention
    rows = rows_of(variable_dataset, 8)
    packed, alone = per_example_packed(model, rows), per_example_alone(model, rows)
    assert len(pack_batch(rows, 0)["input_ids"]) < len(rows)  # examples really share rows
    assert [len(p) for p in packed] == [len(a) for a in alone]
    for p, a in zip(packed, alone):
        torch.testing.assert_close(p, a, rtol=0, atol=1e-4)
    # the step's loss (mean over target tokens) is the padded batch's: packing leaves the weighting unchanged
    padded = pad_batch(rows, pad_id=0)
    padded_losses = token_losses(model, padded)
    step_padded = padded_losses[padded["labels"].roll(-1, 1) != IGNORE_INDEX].mean()
    torch.testing.assert_close(torch.cat(packed).mean(), step_padded, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention", ["sdpa", "eager", "flash_attention_2"])
def test_on_cuda_packed_per_example_losses_equal_unpacked(tiny_base_dir, variable_dataset, attention, tmp_path):
    """The CUDA path in bf16 (written for a GPU machine; never run on this project's CPU-only machines)."""
    from ops.model.base_resolution import resolve_base
    from ops.model.device import resolve_device
    from ops.model.quantize import quantize_base
    from ops.model.spec import QuantSpec

    if attention == "flash_attention_2":
        pytest.importorskip("flash_attn")
    gpu = resolve_device(require_gpu=True)
    quantize_base(resolve_base(str(tiny_base_dir)), QuantSpec(compute_dtype="auto"), gpu, tmp_path, log=lambda _: None)
    model = load_quantized_model(tmp_path / "model", gpu)
    model.set_attn_implementation(attention)
    check_packing_support(model, gpu)
    rows = rows_of(variable_dataset, 8)
    with torch.no_grad():
        packed, alone = per_example_packed(model, rows), per_example_alone(model, rows)
    for p, a in zip(packed, alone):
        torch.testing.assert_close(p, a, rtol=0, atol=5e-2)  # bf16: sums in another order round differently


def test_with_a_cache_packed_examples_see_each_other(base_fp32):
    """Why packing turns the cache off: with one, transformers builds a plain causal mask over the packed row."""
    model = load_quantized_model(base_fp32, FP32_CPU)
    gap, crossing = packed_logprob_gaps(model)
    assert gap < 1e-4 and crossing > 0.1
    model.config.use_cache = True  # what from_pretrained leaves for a Llama; the eval loop would then make a cache
    with torch.no_grad():
        ids = torch.randint(4, 500, (1, 21))
        positions = torch.cat([torch.arange(12), torch.arange(9)])[None]
        alone = model(input_ids=ids[:, 12:]).logits.log_softmax(-1)
        packed = model(input_ids=ids, position_ids=positions).logits[:, 12:].log_softmax(-1)
    assert (alone - packed).abs().max() > 0.1
    check_packing_support(model, FP32_CPU)
    assert model.config.use_cache is False


def test_refuses_attention_that_does_not_keep_examples_apart(base_fp32):
    model = load_quantized_model(base_fp32, FP32_CPU)
    model.config._attn_implementation = "flash_attention_2"  # cannot run on a CPU; the check says so first
    with pytest.raises(ValueError, match="packing needs attention that honours restarting position ids .*this model "
                                         "runs 'flash_attention_2' on cpu: set packing: false"):
        check_packing_support(model, FP32_CPU)
    model.config._attn_implementation = "paged|sdpa"  # continuous-batching attention: its own masks, not ours
    with pytest.raises(ValueError, match="runs 'paged\\|sdpa' on cpu"):
        check_packing_support(model, FP32_CPU)


def causal_only_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa with a plain causal mask, whatever mask transformers built: an attention that ignores packing."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)


def test_the_check_on_the_model_refuses_attention_that_crosses_examples(base_fp32, monkeypatch):
    """Past the list of names, the check runs the model: an allowed name whose attention crosses examples is refused."""
    from transformers import AttentionInterface

    from ops.train import packing

    AttentionInterface.register("causal_only", causal_only_attention)
    monkeypatch.setattr(packing, "PACKING_ATTENTION", (*packing.PACKING_ATTENTION, "causal_only"))
    model = load_quantized_model(base_fp32, FP32_CPU)
    model.set_attn_implementation("causal_only")
    gap, crossing = packed_logprob_gaps(model)
    assert gap == pytest.approx(crossing) and gap > 0.1
    with pytest.raises(ValueError, match=r"packing refused: LlamaForCausalLM with causal_only attention lets packed "
                                         r"examples see each other \(packed log-probabilities move by [0-9.]+, "
                                         r"attention across the examples moves them by [0-9.]+\); set packing: false"):
        check_packing_support(model, FP32_CPU)


def sampled_batches(model_dir, dataset_dir, tmp_path, group: bool) -> tuple[list[list[int]], float]:
    """The first 8 batches of 8 the Trainer's own train dataloader draws, as row lengths, and their padding share."""
    data = load_prepared(dataset_dir)["train"].select_columns(list(MODEL_COLUMNS))
    data = data.map(lambda row: {LENGTH_COLUMN: len(row["input_ids"])}, keep_in_memory=True)
    spec = TrainSpec(max_steps=4, batch_size=8, group_by_length=group, seed=3)
    counter = BatchTokens()
    model = torch.nn.Linear(1, 1)  # the sampler and collator need no language model
    trainer = Trainer(model=model, args=build_training_args(spec, FP32_CPU, tmp_path), train_dataset=data,
                      data_collator=batch_collator(0, counter, packing=False))
    batches = []
    for batch, _ in zip(trainer.get_train_dataloader(), range(8)):
        batches.append((batch["labels"] != IGNORE_INDEX).sum(1).tolist())
    return batches, counter.padding_share()


def test_group_by_length_changes_the_batches_and_cuts_padding(base_fp32, variable_dataset, tmp_path):
    assert build_training_args(TrainSpec(max_steps=1, group_by_length=True), FP32_CPU, tmp_path).train_sampling_strategy == \
        "group_by_length"
    assert build_training_args(TrainSpec(max_steps=1), FP32_CPU, tmp_path).train_sampling_strategy == "random"
    random_batches, random_padding = sampled_batches(base_fp32, variable_dataset, tmp_path / "r", group=False)
    grouped_batches, grouped_padding = sampled_batches(base_fp32, variable_dataset, tmp_path / "g", group=True)
    assert random_batches != grouped_batches
    assert random_padding > 0.25  # outputs of 1..60 words drawn at random: a third of each batch is padding
    assert grouped_padding < random_padding / 2, (grouped_padding, random_padding)


def test_packed_training_follows_the_padded_run_with_less_padding(base_fp32, variable_dataset, tmp_path):
    """Same seed, same examples per step, dropout off: packing changes the batches' shape, not the losses.

    This checks the Trainer's side (sampling, loss normalisation, token counts), not attention: on the tiny random
    base, attention across examples moved the mean loss by < 1e-6 (measured by breaking the position restart),
    which the per-example test above catches by 1e-4 per token.
    """
    common = dict(max_steps=3, batch_size=8, logging_steps=1, warmup_steps=1, lr_scheduler="cosine", save_steps=100, dropout=0.0, r=8,
                  alpha=16)
    padded = train_adapter(base_fp32, variable_dataset, tmp_path / "padded", TrainSpec(**common), FP32_CPU,
                           log=lambda _: None)
    packed = train_adapter(base_fp32, variable_dataset, tmp_path / "packed", TrainSpec(**common, packing=True),
                           FP32_CPU, log=lambda _: None)
    assert [s for s, _ in packed.loss_history] == [1, 2, 3]
    torch.testing.assert_close([loss for _, loss in packed.loss_history],
                               [loss for _, loss in padded.loss_history], rtol=0, atol=1e-4)
    assert packed.train_tokens == padded.train_tokens  # the same real tokens went through
    assert packed.padding_share < padded.padding_share


def test_packing_cuts_the_padding_of_variable_length_batches(variable_dataset):
    rows = rows_of(variable_dataset, 336)  # 21 batches of 16 of the 344 training rows
    shares = {}
    for packing in (False, True):
        counter = BatchTokens()
        collate = batch_collator(0, counter, packing)
        for start in range(0, len(rows), 16):
            collate(rows[start:start + 16])
        shares[packing] = counter.padding_share()
    # outputs of 1..60 words in random order: 31% of the padded batches is padding, 18% of the packed ones (rows
    # as long as the longest example keep the gaps no remaining example fits; a simulation of uniform lengths
    # gives the same ~14-17%)
    assert shares[False] > 0.28 and shares[True] < 0.65 * shares[False], shares


def test_packed_eval_loss_equals_padded(base_fp32, variable_dataset, tmp_path):
    """The Trainer's eval loop (eval during training) runs the same collator: its loss must not change."""
    model = lora_model(base_fp32, "sdpa")
    data = load_prepared(variable_dataset)["eval"].select_columns(list(MODEL_COLUMNS))
    args = build_training_args(TrainSpec(max_steps=1, batch_size=4), FP32_CPU, tmp_path)
    args.per_device_eval_batch_size = 4
    losses = {}
    for packing in (False, True):
        trainer = Trainer(model=model, args=args, eval_dataset=data,
                          data_collator=batch_collator(0, BatchTokens(), packing=packing))
        losses[packing] = trainer.evaluate()["eval_loss"]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
