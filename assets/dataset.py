"""training_dataset: load, validate, render, tokenize, mask and split the fine-tuning data."""

import dagster as dg
from pydantic import Field

from assets.common import StepConfig, md_table, step_output, typed_metadata
from ops.core.code_version import asset_code_version
from ops.core.fingerprint import fingerprint
from ops.core.store import materialize
from ops.data.sources import source_identity
from ops.data.spec import DatasetSummary, DataSpec, SourceSpec
from resources import ArtifactStoreResource, BaseModelResource

# datasets writes the splits, tokenizers and transformers turn text into ids.
CODE_VERSION = asset_code_version(__file__, ("datasets", "tokenizers", "transformers"))


class SourceConfig(dg.Config, SourceSpec):
    """One source of a mixture (Dagster takes nested settings only as dg.Config classes)."""


class DatasetConfig(StepConfig, DataSpec):
    mixture: list[SourceConfig] = Field(default_factory=list, description=DataSpec.model_fields["mixture"].description)


def source_rows(summary: DatasetSummary) -> list[dict]:
    """One table row per source: its format, rows (loaded, drawn, kept), share of the kept rows and tokens."""
    return [{"source": s.source, "format": s.format, "rows_loaded": s.rows_loaded, "rows_drawn": s.rows_drawn,
             "rows": s.rows, "share": s.share, "tokens": s.tokens, "target_tokens": s.target_tokens}
            for s in summary.sources]


@dg.asset(group_name="qlora", kinds={"huggingface", "python"}, code_version=CODE_VERSION)
def training_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, store: ArtifactStoreResource, base_model: BaseModelResource
) -> dg.Output:
    """Instruction data tokenized with the base model's tokenizer, prompt masked out of the loss, split train/eval."""
    base, spec = base_model.resolve(), DataSpec(**config.fingerprint_fields())
    fp = fingerprint(CODE_VERSION, spec.model_dump(), {"data": source_identity(spec), "tokenizer": base.identity})

    def work(tmp) -> DatasetSummary:
        # Imported here, after the cache check: a cache hit loads no datasets or transformers.
        from ops.data.preparation import prepare_dataset
        from ops.model.loading import load_tokenizer

        tokenizer = load_tokenizer(base.source, base.revision, base_model.trust_remote_code)
        return prepare_dataset(spec, tokenizer, tmp, log=context.log.info)

    result = materialize(store.store(), "training_dataset", fp, work, DatasetSummary, force=config.force,
                         log=context.log.info, config=spec.model_dump())
    # markdown tables beside typed_metadata, which would turn a MetadataValue into its repr string
    return step_output(result, {
        **typed_metadata(result.summary, "format", "rows", "train_rows", "eval_rows", "tokens", "truncated_rows",
                         "duplicates_dropped"),
        "preview": dg.MetadataValue.md(md_table(result.summary.preview)),
        "sources": dg.MetadataValue.md(md_table(source_rows(result.summary))),
        **{f"rows/{i}": dg.MetadataValue.int(s.rows) for i, s in enumerate(result.summary.sources, 1)},
        **{f"tokens/{i}": dg.MetadataValue.int(s.tokens) for i, s in enumerate(result.summary.sources, 1)},
    })
