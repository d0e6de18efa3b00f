"""Evaluate an adapter against its base on the held-out split: loss, perplexity and generation metrics.

The 4-bit base is loaded once; the base numbers come from the same PEFT model with its adapter disabled,
so both sides see identical quantized weights and only the adapter differs. The base's numbers and generations are
kept apart from the adapter's (ops.evaluation.base_cache), so the next adapter on the same base and data reuses them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import evaluate
import torch
import torch.nn.functional as F

from ..core.progress import progress
from ..core.store import materialize
from ..data.chat_template import answer_text, stop_token_ids
from ..data.tokens import IGNORE_INDEX, MODEL_COLUMNS, pad_batch
from ..model.cpu_kernels import named_kernel_errors
from ..model.device import DeviceInfo
from ..model.generation import batch_size_from_memory, encode_prompts, generate_ids
from ..model.loading import load_adapter_model, load_tokenizer
from .base_cache import BASE_STEP, BaseCache, BaseEvaluation, base_settings
from .report import METRICS, METRICS_DIR, EvaluationReport, ModelScores
from .samples import mark, readable_prompt
from .spec import EvalSpec


def load_eval_split(dataset_dir: str | Path) -> datasets.Dataset:
    """The held-out split of a prepared dataset artifact."""
    return datasets.load_from_disk(str(Path(dataset_dir) / "dataset"))["eval"]


def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of the project's own metric modules, loaded by path (no hub download)."""
    # keep_in_memory: no cache files or locks, so parallel Dagster runs cannot collide.
    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


@torch.inference_mode()
def target_loss(model, rows: datasets.Dataset, pad_id: int, batch_size: int | None = None,
                desc: str = "loss") -> tuple[float, int]:
    """Token-weighted mean cross-entropy over target tokens (labels != -100), and how many there were.

    Rows run longest first in batches of `batch_size` (None: as many as fit in memory), so batches pad little;
    the sum over tokens does not depend on the order. `desc` labels the terminal's progress bar (ops.core.progress).
    """
    device = next(model.parameters()).device
    rows = rows.select_columns(list(MODEL_COLUMNS)).to_list()
    if batch_size is None:
        batch_size = batch_size_from_memory(model, max((len(r["input_ids"]) for r in rows), default=1), len(rows))
    rows.sort(key=lambda r: -len(r["input_ids"]))
    total_nll, total_tokens = 0.0, 0
    for start in progress(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        batch = {k: v.to(device) for k, v in pad_batch(rows[start:start + batch_size], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Position t predicts token t+1. Upcast so bf16 logits do not round the loss.
        shifted_logits = logits[:, :-1].float()
        shifted_labels = batch["labels"][:, 1:]
        total_nll += F.cross_entropy(shifted_logits.transpose(1, 2), shifted_labels,
                                     ignore_index=IGNORE_INDEX, reduction="sum").item()
        total_tokens += int((shifted_labels != IGNORE_INDEX).sum())
    if total_tokens == 0:
        raise ValueError("the eval split has no target tokens (every label is -100); nothing to score")
    return total_nll / total_tokens, total_tokens


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:  # a diverged model; inf says so better than an exception
        return math.inf


def clean_reference(completion: str, tokenizer: Any, stop_ids: list[int] | None = None) -> str:
    """The reference answer exactly as a generation of the same tokens would come back from ops.model.generation.

    The completion is tokenized as data preparation tokenized it, then cut at the first stop token (eos or the
    template's end-of-turn token, e.g. `red<|im_end|>\n` -> `red`), special tokens dropped, whitespace stripped.
    `stop_ids` defaults to ops.data.chat_template.stop_token_ids(tokenizer); pass the ones generation used.
    """
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return answer_text(ids, tokenizer, stop_token_ids(tokenizer) if stop_ids is None else stop_ids)


def score_model(model, tokenizer, eval_rows: datasets.Dataset, prompt_ids: list[list[int]], references: list[str],
                spec: EvalSpec, metrics: dict[str, Any], stop_ids: list[int],
                phases: dict[str, float] | None = None, side: str = "model") -> tuple[ModelScores, list[str]]:
    """Loss, perplexity and generation metrics of one model; also its generations.

    `prompt_ids` are the generation rows' prompts, encoded once for both models (ops.model.generation.encode_prompts).
    When `phases` is given, `<side>.loss_s`, `<side>.generate_s` (seconds) and `<side>.generated_tokens` go into it.
    """
    started = time.perf_counter()
    loss, _ = target_loss(model, eval_rows, tokenizer.pad_token_id, spec.batch_size, desc=f"{side} loss")
    loss_done = time.perf_counter()
    new_ids = generate_ids(model, tokenizer, prompt_ids, spec.max_new_tokens, spec.batch_size, stop_ids,
                           desc=f"{side} generate")
    if phases is not None:
        phases.update({f"{side}.loss_s": round(loss_done - started, 3),
                       f"{side}.generate_s": round(time.perf_counter() - loss_done, 3),
                       f"{side}.generated_tokens": sum(map(len, new_ids))})
    predictions = [answer_text(ids, tokenizer, stop_ids) for ids in new_ids]
    scores = {"eval_loss": loss, "perplexity": perplexity(loss)}
    for name, metric in metrics.items():
        scores.update(metric.compute(predictions=predictions, references=references))
    return ModelScores(**scores), predictions


def _summary(name: str, scores: ModelScores) -> str:
    return (f"{name}: loss {scores.eval_loss:.4f} ppl {scores.perplexity:.2f} "
            f"exact_match {scores.exact_match:.2f} rouge_l {scores.rouge_l:.2f}")


def sample_rows(gen_rows: datasets.Dataset, references: list[str], base_preds: list[str], tuned_preds: list[str],
                tokenizer: Any, exact_match: Any, limit: int) -> list[dict[str, str]]:
    """The first `limit` generation rows for reading: the rendered prompt (to find the row again), its instruction
    and input without template boilerplate, the reference, base and tuned answers, and `match`: ✓ when the tuned
    answer is an exact match by the exact_match metric itself (so the marks add up to the reported score)."""
    rows = []
    for prompt, ref, base, tuned in list(zip(gen_rows["prompt"], references, base_preds, tuned_preds))[:limit]:
        instruction, input_text = readable_prompt(prompt, tokenizer)
        hit = exact_match.compute(predictions=[tuned], references=[ref])["exact_match"] == 1.0
        rows.append({"prompt": prompt, "instruction": instruction, "input": input_text, "reference": ref,
                     "tuned": tuned, "match": mark(hit), "base": base})
    return rows


def evaluate_adapter(model_dir: str | Path, adapter_dir: str | Path, dataset_dir: str | Path, spec: EvalSpec,
                     device: DeviceInfo, log: Callable[[str], Any] = print,
                     base_cache: BaseCache | None = None) -> EvaluationReport:
    """Score the base and base+adapter on the held-out split.

    Args:
        model_dir: a quantized_base_model artifact's `model/` folder.
        adapter_dir: a qlora_adapter artifact's `adapter/` folder.
        dataset_dir: a training_dataset artifact folder (its eval split is scored).
        spec: generation length, rows generated, batch size.
        device: where to run.
        log: one line per model scored.
        base_cache: where the base's scores and generations are kept (ops.evaluation.base_cache); when its entry
            exists the base is not scored again. None: the base is scored and kept nowhere.
    Returns:
        base, tuned and delta scores (loss in nats per target token), sample generations, seconds.
    Raises:
        PackedKernelError: a 4-bit kernel failure, named with the layer and the CPU.
    """
    started = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    eval_rows = load_eval_split(dataset_dir)
    gen_rows = eval_rows.select(range(min(spec.num_generation_examples, len(eval_rows))))
    metrics = {name: load_metric(name) for name in ("exact_match", "rouge_l")}
    log(f"evaluating on {len(eval_rows)} held-out rows ({len(gen_rows)} generated) on {device.type}/{device.dtype_name}")

    model = load_adapter_model(model_dir, adapter_dir, device)
    phases = {"load_s": round(time.perf_counter() - started, 3)}
    # The stops generation uses, so references and predictions are cut at the same tokens.
    stop_ids = stop_token_ids(tokenizer, model.generation_config)
    references = [clean_reference(c, tokenizer, stop_ids) for c in gen_rows["completion"]]
    prompt_ids = encode_prompts(tokenizer, list(gen_rows["prompt"]))  # once, for both models

    def score_base(_tmp=None) -> BaseEvaluation:
        base_started, base_phases = time.perf_counter(), {}
        with named_kernel_errors("evaluate (base)", model), model.disable_adapter():
            scores, predictions = score_model(model, tokenizer, eval_rows, prompt_ids, references, spec, metrics,
                                              stop_ids, base_phases, "base")
        return BaseEvaluation(scores=scores, predictions=predictions, eval_rows=len(eval_rows),
                              generation_rows=len(gen_rows), device=device.type, compute_dtype=device.dtype_name,
                              phases=base_phases, seconds=round(time.perf_counter() - base_started, 3))

    if base_cache is None:
        base_entry, base_hit = score_base(), False
    else:
        stored = materialize(base_cache.store, BASE_STEP, base_cache.fingerprint, score_base, BaseEvaluation,
                             force=base_cache.force, log=log,
                             config=base_settings(spec, device.type, device.dtype_name))
        base_entry, base_hit = stored.summary, stored.cache_hit
    base, base_preds = base_entry.scores, base_entry.predictions
    # A hit costs nothing now; say what it saved rather than mix another run's seconds into this one's phases.
    phases.update({"base.cached_s": base_entry.seconds} if base_hit else base_entry.phases)
    log(_summary("base (cached)" if base_hit else "base", base))
    with named_kernel_errors("evaluate (tuned)", model):
        tuned, tuned_preds = score_model(model, tokenizer, eval_rows, prompt_ids, references, spec, metrics, stop_ids,
                                         phases, "tuned")
    log(_summary("tuned", tuned))

    return EvaluationReport(
        base=base,
        tuned=tuned,
        delta=ModelScores(**{k: getattr(tuned, k) - getattr(base, k) for k in METRICS}),
        eval_rows=len(eval_rows),
        generation_rows=len(gen_rows),
        samples=sample_rows(gen_rows, references, base_preds, tuned_preds, tokenizer, metrics["exact_match"],
                            spec.num_samples_shown),
        device=device.type,
        compute_dtype=device.dtype_name,
        seconds=round(time.perf_counter() - started, 2),
        phases=phases,
        base_cache_hit=base_hit,
        base_fingerprint=base_cache.fingerprint if base_cache is not None else "",
    )
