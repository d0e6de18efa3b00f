"""Fingerprints name cached artifacts: equal for equal content whatever the dict order, different otherwise."""

from __future__ import annotations

from ops.core.fingerprint import FINGERPRINT_LEN, file_checksums, fingerprint, hash_file, hash_tree, stable_hash

CONFIG = {"r": 16, "alpha": 32, "target_modules": ["all-linear"], "nested": {"lr": 1e-3, "seed": 0}}
INPUTS = {"training_dataset": "aaaa", "quantized_base_model": "bbbb"}


def test_stable_hash_ignores_dict_order_at_every_depth():
    shuffled = {"nested": {"seed": 0, "lr": 1e-3}, "target_modules": ["all-linear"], "alpha": 32, "r": 16}
    assert stable_hash(CONFIG) == stable_hash(shuffled)
    assert len(stable_hash(CONFIG)) == FINGERPRINT_LEN == 16
    int(stable_hash(CONFIG), 16)  # hex


def test_fingerprint_ignores_input_order_and_treats_no_inputs_as_empty():
    reordered = dict(reversed(list(INPUTS.items())))
    assert fingerprint("1", CONFIG, INPUTS) == fingerprint("1", CONFIG, reordered)
    assert fingerprint("1", CONFIG) == fingerprint("1", CONFIG, {})


def test_fingerprint_changes_with_every_field_code_version_and_input():
    base = fingerprint("1", CONFIG, INPUTS)
    variants = [
        fingerprint("2", CONFIG, INPUTS),
        fingerprint("1", {**CONFIG, "r": 8}, INPUTS),
        fingerprint("1", {**CONFIG, "alpha": 16}, INPUTS),
        fingerprint("1", {**CONFIG, "target_modules": ["q_proj"]}, INPUTS),
        fingerprint("1", {**CONFIG, "nested": {"lr": 2e-3, "seed": 0}}, INPUTS),
        fingerprint("1", {**CONFIG, "nested": {"lr": 1e-3, "seed": 1}}, INPUTS),
        fingerprint("1", {**CONFIG, "extra": None}, INPUTS),
        fingerprint("1", CONFIG, {**INPUTS, "training_dataset": "aaab"}),
        fingerprint("1", CONFIG, {**INPUTS, "quantized_base_model": "bbbc"}),
        fingerprint("1", CONFIG, {"training_dataset": "aaaa"}),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_list_order_matters():
    assert stable_hash({"t": ["q_proj", "v_proj"]}) != stable_hash({"t": ["v_proj", "q_proj"]})


def test_hash_tree_tracks_file_contents_names_and_new_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    first = hash_tree(tmp_path)
    assert hash_tree(tmp_path) == first and len(first) == FINGERPRINT_LEN

    (tmp_path / "config.json").write_text('{"a": 2}')
    changed = hash_tree(tmp_path)
    assert changed != first
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert hash_tree(tmp_path) == first  # content, not mtime

    (tmp_path / "sub" / "weights.bin").rename(tmp_path / "sub" / "weights2.bin")
    assert hash_tree(tmp_path) != first  # names count
    (tmp_path / "sub" / "weights2.bin").rename(tmp_path / "sub" / "weights.bin")
    (tmp_path / "README").write_text("x")
    assert hash_tree(tmp_path) != first
    only_json = hash_tree(tmp_path, "*.json")
    (tmp_path / "sub" / "weights.bin").write_bytes(b"other")
    assert hash_tree(tmp_path, "*.json") == only_json  # the pattern limits what is hashed
    (tmp_path / "config.json").write_text('{"a": 3}')
    assert hash_tree(tmp_path, "*.json") != only_json


def test_hash_file_reads_in_chunks_and_checksums_every_file(tmp_path):
    import hashlib

    data = bytes(range(256)) * 1000
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("hello")
    assert hash_file(tmp_path / "a.bin", chunk=7) == hashlib.sha256(data).hexdigest()
    assert file_checksums(tmp_path) == {"a.bin": hashlib.sha256(data).hexdigest(),
                                        "d/b.txt": hashlib.sha256(b"hello").hexdigest()}
