"""Resolving the base model: the embedded default (built once), local folders (checked), hub ids (pinned)."""

from __future__ import annotations

import shutil

import pytest

from ops.core.fingerprint import hash_tree
from ops.model.base_resolution import BaseModelError, check_model_dir, embedded_base_dir, resolve_base
from ops.model.embedded import EMBEDDED_ID, builder_version


def test_embedded_is_built_once_under_the_data_home_and_cached(qlora_home):
    first = resolve_base(EMBEDDED_ID)
    path = qlora_home / "base_models"
    assert first.is_local and first.model_id == EMBEDDED_ID and first.revision is None
    built = sorted(p.name for p in path.iterdir())
    assert len(built) == 1 and built[0].startswith(f"tiny-llama-{builder_version()}-")  # no .tmp- left behind
    assert first.source == str(path / built[0])
    assert first.identity == {"model_id": EMBEDDED_ID, "content_hash": hash_tree(path / built[0])}
    stamp = (path / built[0] / "model.safetensors").stat().st_mtime_ns

    second = resolve_base(EMBEDDED_ID)
    assert second == first
    assert (path / built[0] / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    check_model_dir(path / built[0])


def test_embedded_dir_honours_an_explicit_home(tmp_path):
    out = embedded_base_dir(tmp_path / "elsewhere")
    assert out.parent == tmp_path / "elsewhere" / "base_models" and (out / "config.json").is_file()


def test_unknown_embedded_model_is_rejected():
    with pytest.raises(BaseModelError, match=r"unknown embedded model 'embedded:foo'; the only one is 'embedded:tiny-llama'"):
        resolve_base("embedded:foo")


@pytest.mark.parametrize("model_id", ["", "   "])
def test_empty_model_id_is_rejected(model_id):
    with pytest.raises(BaseModelError, match="model_id is empty"):
        resolve_base(model_id)


def test_local_dir_gets_its_content_hash(tiny_base_dir):
    base = resolve_base(str(tiny_base_dir))
    assert base.is_local and base.source == str(tiny_base_dir.resolve())
    assert base.identity == {"model_id": str(tiny_base_dir.resolve()), "content_hash": hash_tree(tiny_base_dir)}


def test_missing_config_names_the_path(tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(BaseModelError, match=f"base model directory {folder} has no config.json"):
        resolve_base(str(folder))


def test_missing_dir_and_missing_weights(tmp_path):
    with pytest.raises(BaseModelError, match=f"base model directory {tmp_path / 'nope'} does not exist"):
        check_model_dir(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BaseModelError, match=r"holds no weights \(\*.safetensors or \*.bin\)"):
        resolve_base(str(tmp_path))


def test_pickle_weights_are_refused_unless_allowed(tiny_base_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_base_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "pytorch_model.bin").write_bytes(b"not loaded by the check")
    with pytest.raises(BaseModelError, match=r"holds only pickle weights \(pytorch_model.bin\).*allow_pickle_weights"):
        resolve_base(str(folder))
    base = resolve_base(str(folder), allow_pickle=True)
    assert base.is_local and base.identity["content_hash"] == hash_tree(folder)


def test_hub_id_is_pinned_to_a_revision_without_touching_the_network():
    base = resolve_base("meta-llama/Llama-3.2-1B")
    assert not base.is_local and base.source == "meta-llama/Llama-3.2-1B"
    assert base.revision == "main" and base.identity == {"model_id": "meta-llama/Llama-3.2-1B", "revision": "main"}
    sha = "0123456789abcdef0123456789abcdef01234567"
    pinned = resolve_base("meta-llama/Llama-3.2-1B", revision=sha)
    assert pinned.revision == sha and pinned.identity["revision"] == sha


def test_a_model_that_needs_its_own_code_is_refused_unless_trusted(tiny_base_dir, tmp_path):
    import json
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(tiny_base_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelError, match=r"needs its own Python code.*trust_remote_code: true"):
        resolve_base(str(custom))
    assert resolve_base(str(custom), trust_remote_code=True).is_local
