"""training_dataset: load, validate, render, tokenize, mask and split the fine-tuning data."""


import dagster as dg

from assets.common import StepConfig, md_table, step_output
from ops.core.code_version import asset_code_version
from ops.data.sources import source_identity
from ops.data.preparation import prepare_dataset
from ops.core.fingerprint import fingerprint
from ops.model.loading import load_tokenizer
from ops.data.spec import DataSpec
from ops.core.store import materialize
from resources import ArtifactStoreResource, BaseModelResource

# datasets writes the splits, tokenizers and transformers turn text into ids.
CODE_VERSION = asset_code_version(__file__, ("datasets", "tokenizers", "transformers"))


class DatasetConfig(StepConfig, DataSpec):
    pass


@dg.asset(group_name="qlora", kinds={"huggingface", "python"}, code_version=CODE_VERSION)
def training_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, store: ArtifactStoreResource, base_model: BaseModelResource
) -> dg.Output:
    """Instruction data tokenized with the base model's tokenizer, prompt masked out of the loss, split train/eval."""
    base = base_model.resolve()
    fp = fingerprint(CODE_VERSION, config.fingerprint_fields(), {"data": source_identity(config), "tokenizer": base.identity})

    def work(tmp):
        tokenizer = load_tokenizer(base.source, base.revision, base_model.trust_remote_code)
        return prepare_dataset(DataSpec(**config.fingerprint_fields()), tokenizer, tmp, log=context.log.info)

    result = materialize(store.store(), "training_dataset", fp, work, config.force, context.log.info,
                         config=config.fingerprint_fields())
    s = result.summary
    return step_output(result, {
        "format": s["format"],
        "rows": dg.MetadataValue.int(s["rows"]),
        "train_rows": dg.MetadataValue.int(s["train_rows"]),
        "eval_rows": dg.MetadataValue.int(s["eval_rows"]),
        "tokens": dg.MetadataValue.int(s["tokens"]),
        "truncated_rows": dg.MetadataValue.int(s["truncated_rows"]),
        "duplicates_dropped": dg.MetadataValue.int(s["duplicates_dropped"]),
        "preview": dg.MetadataValue.md(md_table(s["preview"])),
    })
