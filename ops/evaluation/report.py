"""The evaluation report: base and tuned scores on the held-out split, the metric names, and which way is better.

The one list of metric names: `METRICS` (a model's scores) and `GATE_METRICS` (the tuned model's, which the
champion gate and the regression check compare). Light on purpose (pydantic only): the registry settings and
the checks import it without loading torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ..core.markdown import md_table, readable
from ..core.store import StepSummary

METRICS_DIR = Path(__file__).resolve().parent / "metrics"  # the metric modules, loaded by path through `evaluate`
# Metrics whose name ends like these are better when lower; every other metric (exact_match, rouge_l) when higher.
LOWER_IS_BETTER = ("loss", "perplexity")


class ModelScores(BaseModel):
    """One model's scores on the held-out split."""

    model_config = ConfigDict(frozen=True)

    eval_loss: float  # nats per target token, token-weighted over the split
    perplexity: float  # exp(eval_loss)
    exact_match: float  # share of generations equal to the reference, 0 to 1
    rouge_l: float  # mean ROUGE-L F1 of generation against reference, 0 to 1


METRICS = tuple(ModelScores.model_fields)
GATE_METRICS = tuple(f"tuned.{name}" for name in METRICS)


class EvaluationReport(StepSummary):
    """What `evaluate_adapter` measured: base and base+adapter on the same held-out rows (report.json)."""

    base: ModelScores
    tuned: ModelScores
    delta: ModelScores  # tuned minus base, per metric
    eval_rows: int  # rows scored for loss
    generation_rows: int  # rows scored by generation
    # The first rows: rendered prompt, instruction and input without the template, reference, tuned, match (✓ when
    # tuned is an exact match), base. Reports written before had prompt, reference, base and tuned only.
    samples: list[dict[str, str]]
    device: str
    compute_dtype: str
    seconds: float
    # Where the seconds went, per side: `base.loss_s`, `base.generate_s`, `base.generated_tokens`, the same for
    # `tuned.`, and `load_s`; with the base read from its cache entry, `base.cached_s` (what computing it took then)
    # instead of the base's own. Empty in reports written before it existed.
    phases: dict[str, float] = {}
    base_cache_hit: bool = False  # the base's numbers came from its store entry (ops.evaluation.base_cache)
    base_fingerprint: str = ""  # that entry's fingerprint; "" when the base was not kept

    def value(self, metric: str) -> float:
        """A dotted metric such as `tuned.eval_loss`.

        Raises:
            ValueError: a name that is not `base.` or `tuned.` followed by one of METRICS.
        """
        section, _, name = metric.partition(".")
        if section not in ("base", "tuned") or name not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected base.<m> or tuned.<m> with m in {', '.join(METRICS)}")
        return getattr(getattr(self, section), name)


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of `metric` (plain or dotted) are better: losses and perplexities."""
    return metric.rsplit(".", 1)[-1].endswith(LOWER_IS_BETTER)


def improvement(metric: str, candidate: float, reference: float) -> float:
    """How much better `candidate` is than `reference` (positive: better), whatever the metric's direction."""
    return reference - candidate if lower_is_better(metric) else candidate - reference


def write_report(report: EvaluationReport, path: str | Path) -> Path:
    """Write the report as indented JSON; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n")
    return path


def report_table_md(report: EvaluationReport) -> str:
    """A markdown table of base, tuned and delta per metric."""
    lines = ["| metric | base | tuned | delta |", "| --- | ---: | ---: | ---: |"]
    for k in METRICS:
        base, tuned, delta = (getattr(getattr(report, part), k) for part in ("base", "tuned", "delta"))
        lines.append(f"| {k} | {base:.4f} | {tuned:.4f} | {delta:+.4f} |")
    return "\n".join(lines)


def duration_text(seconds: float) -> str:
    """Seconds as a person reads them: 42.3 -> "42.3 s", 252 -> "4 min 12 s", 7380 -> "2 h 3 min"."""
    if round(seconds, 1) < 60:  # 59.96 s reads as 1 min 0 s, not 60.0 s
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def phases_rows(report: EvaluationReport) -> list[dict]:
    """Where the evaluation's time went, one row per side: loss pass and generation seconds, generated tokens and
    tokens/s (the shared model load is its own row). A base read from its cache entry says so and what it saved."""
    p = report.phases
    rows = [{"phase": "load (base + adapter)", "loss s": "", "generation s": "", "generated tokens": "",
             "tokens/s": "", "total s": p["load_s"]}] if "load_s" in p else []
    for side in ("base", "tuned"):
        if f"{side}.cached_s" in p:
            rows.append({"phase": f"{side} (cached)", "loss s": "", "generation s": "", "generated tokens": "",
                         "tokens/s": "", "total s": f"0 (saved {duration_text(p[f'{side}.cached_s'])})"})
        elif f"{side}.loss_s" in p:
            gen_s, tokens = p[f"{side}.generate_s"], p[f"{side}.generated_tokens"]
            rows.append({"phase": side, "loss s": p[f"{side}.loss_s"], "generation s": gen_s,
                         "generated tokens": int(tokens), "tokens/s": tokens / gen_s if gen_s else "",
                         "total s": p[f"{side}.loss_s"] + gen_s})
    return rows


def phases_markdown(report: EvaluationReport) -> str:
    """phases_rows as a Markdown table (numbers to 4 significant digits); `_empty_` for reports without phases."""
    return md_table(phases_rows(report))


def report_markdown(report: EvaluationReport) -> str:
    """The whole report as Markdown: the metric table, the counts, where the time went, and the sample generations."""
    from .samples import samples_markdown  # renders chat markers with jinja2: only when a report is written out

    took = duration_text(report.seconds) + (f" ({readable(report.seconds)} s)" if report.seconds >= 60 else "")
    cached = f" Base numbers from the cache entry {report.base_fingerprint}." if report.base_cache_hit else ""
    return "\n".join([
        "# Evaluation on the held-out split", "",
        report_table_md(report), "",
        f"{report.eval_rows} rows scored for loss, {report.generation_rows} by generation; "
        f"{report.device}, {report.compute_dtype}, {took}.{cached}",
        "", "## Where the time went", "", phases_markdown(report), "",
        "## Sample generations", "", samples_markdown(report.samples), "",
    ])
