"""Prepared-data cache: layout, reuse, invalidation, atomic writes, config validation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import bert.data.records as records
import bert.data.shards as shards
from bert.data import DataError, build
from bert.tokenizer import TokenizerError, load_tokenizer
from tests.test_data_support import SMALL_VOCAB, SOTU_EVAL, pretrain_config, small_tokenizer


def test_build_writes_the_documented_layout_and_summary(tmp_path):
    config = pretrain_config()
    tokenizer, prepared = build(config, tmp_path)
    assert prepared.directory.parent == tmp_path / "data"  # cache_dir "" = <workdir>/data
    assert tokenizer.fingerprint == small_tokenizer().fingerprint
    train = prepared.train
    n = len(train)
    assert train.input_ids.shape == (n, 64) and train.input_ids.dtype == np.int32
    assert train.segment_ids.dtype == np.int8 and train.lengths.dtype == np.int32
    assert train.next_sentence_labels.dtype == np.int32
    assert all(isinstance(shard, np.memmap) for shard in train.input_ids.shards)  # mapped
    assert not train.has_static_masks
    assert (train.input_ids[:, 0] == tokenizer.cls_id).all()
    assert (train.input_ids[np.arange(n), train.lengths - 1] == tokenizer.sep_id).all()
    summary = json.loads((prepared.directory / "summary.json").read_text())
    assert summary == prepared.summary
    assert summary["train"]["documents"] == 5 and summary["train"]["files"] == 5
    assert summary["train"]["instances"] == n
    assert summary["train"]["instance_tokens"] == int(train.lengths.sum())
    assert 0.4 < summary["train"]["is_next_fraction"] < 0.6
    assert summary["eval"]["documents"] == 2 and len(prepared.eval) == summary["eval"]["instances"]
    key = json.loads((prepared.directory / "key.json").read_text())
    assert key["tokenizer"] == tokenizer.fingerprint and len(key["train_files"]) == 5


def test_second_build_reuses_the_cache_without_recomputing(tmp_path, monkeypatch):
    _, first = build(pretrain_config(), tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("instances were rebuilt although the cache was valid")

    monkeypatch.setattr(shards, "part_instances", fail)
    _, second = build(pretrain_config(), tmp_path)
    assert second.directory == first.directory
    np.testing.assert_array_equal(second.train.input_ids, first.train.input_ids)


def test_cache_key_follows_what_changes_the_content(tmp_path):
    base = build(pretrain_config(), tmp_path)[1].directory
    changed = {
        "dupe_factor": pretrain_config(dupe_factor=2),
        "short_seq_prob": pretrain_config(short_seq_prob=0.3),
        "static masks": pretrain_config(masking="static"),
        "eval_dupe_factor": pretrain_config(eval_dupe_factor=3),
    }
    seq_len = pretrain_config()
    seq_len.max_seq_len = 32
    changed["max_seq_len"] = seq_len
    other_seed = pretrain_config()
    other_seed.seed = 1
    changed["seed"] = other_seed
    folders = {name: build(config, tmp_path)[1].directory for name, config in changed.items()}
    assert base not in folders.values() and len(set(folders.values())) == len(folders)
    # Dynamic masks are drawn at batch time: their settings do not touch the stored examples.
    assert build(pretrain_config(mask_prob=0.2), tmp_path)[1].directory == base


def test_eval_dupe_factor_pairs_the_eval_text_again(tmp_path):
    once = build(pretrain_config(), tmp_path)[1]
    thrice = build(pretrain_config(eval_dupe_factor=3), tmp_path)[1]
    assert 2.5 * len(once.eval) < len(thrice.eval) < 3.5 * len(once.eval)
    np.testing.assert_array_equal(thrice.train.input_ids, once.train.input_ids)


def test_touched_input_file_invalidates_the_cache(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted(SOTU_EVAL.glob("*.txt"))[:3]:
        (corpus / path.name).write_bytes(path.read_bytes())
    config = pretrain_config(train_files=str(corpus / "*.txt"), eval_files="")
    first = build(config, tmp_path)[1]
    assert first.eval is None
    victim = sorted(corpus.glob("*.txt"))[0]
    victim.write_text(victim.read_text() + " One more sentence. And another.\n")
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    assert build(config, tmp_path)[1].directory != first.directory


def test_crash_while_writing_leaves_no_shard_behind(tmp_path, monkeypatch):
    calls = {"count": 0}
    real_append = shards.GrowingArray.append

    def crash_on_third_array(self, array):
        calls["count"] += 1
        if calls["count"] == 3:
            raise OSError("disk full")
        real_append(self, array)

    monkeypatch.setattr(shards.GrowingArray, "append", crash_on_third_array)
    with pytest.raises(OSError, match="disk full"):  # in this process: the train part first
        build(pretrain_config(prep_workers=1), tmp_path)
    [folder] = (tmp_path / "data").iterdir()
    # The plan and key are written first; no shard, no .partial-*, no summary.
    assert {p.name for p in folder.iterdir()} <= {"key.json", "plan.json", "train", "eval"}
    assert [p for p in folder.glob("*/*")] == []
    monkeypatch.setattr(shards.GrowingArray, "append", real_append)
    _, prepared = build(pretrain_config(), tmp_path)
    assert len(prepared.train) > 0


def test_static_masking_stores_one_mask_per_row(tmp_path):
    tokenizer, prepared = build(pretrain_config(masking="static", dupe_factor=2), tmp_path)
    train = prepared.train
    assert train.has_static_masks and train.masked_lm_positions.shape == (len(train), 10)
    weights = train.masked_lm_weights
    rows, slots = np.nonzero(weights > 0)
    positions = train.masked_lm_positions[rows, slots]
    np.testing.assert_array_equal(train.masked_lm_ids[rows, slots],
                                  train.input_ids[rows, positions])
    specials = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id]
    assert not np.isin(train.input_ids[rows, positions], specials).any()
    assert abs(weights.sum() / (train.lengths - 3).sum() - 0.15) < 0.02
    once = build(pretrain_config(masking="static", dupe_factor=1), tmp_path)[1]
    assert len(train) > 1.8 * len(once.train)  # dupe_factor copies, each its own pairing


def test_empty_tokenizer_trains_one_and_caches_it(tmp_path, monkeypatch):
    config = pretrain_config(tokenizer="")
    tokenizer, prepared = build(config, tmp_path)
    folders = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert [f.split("-")[0] for f in folders] == ["examples", "tokenizer"]
    assert tokenizer.vocab_size == SMALL_VOCAB
    assert load_tokenizer(tmp_path / "data" / folders[1]).fingerprint == tokenizer.fingerprint

    def fail(*args, **kwargs):
        raise AssertionError("the tokenizer was retrained although it was cached")

    monkeypatch.setattr(records, "train_sentencepiece", fail)
    again, _ = build(config, tmp_path)
    assert again.fingerprint == tokenizer.fingerprint


@pytest.mark.parametrize("key,value,message", [
    ("masking", "sometimes", "config.data.masking: must be one of"),
    ("doc_separator", "page", "config.data.doc_separator: must be one of"),
    ("mask_prob", "lots", "config.data.mask_prob: must be a number"),
    ("mask_prob", 1.0, r"config.data.mask_prob: must be in \(0, 1\)"),
    ("random_token_ratio", 0.3, "must sum to 1"),
    ("dupe_factor", 0, "config.data.dupe_factor: must be an integer >= 1"),
    ("short_seq_prob", -0.1, "config.data.short_seq_prob: must be in"),
    ("num_workers", 1.5, "config.data.num_workers: must be an integer"),
    ("train_files", "nothing/here/*.txt", r"config.data.train_files: 'nothing/here/\*.txt'"),
    ("eval_files", "nothing*.txt", "config.data.eval_files: 'nothing\\*.txt' matches no file"),
    ("tokenizer", "no/such/tokenizer", "config.data.tokenizer: tokenizer not found: no/such"),
])
def test_bad_config_values_name_their_key(tmp_path, key, value, message):
    with pytest.raises(DataError, match=message):
        build(pretrain_config(**{key: value}), tmp_path)


def test_a_data_key_missing_from_the_config_is_named_not_defaulted(tmp_path):
    config = pretrain_config()
    del config.data["part_mb"]  # a config written before the key existed
    with pytest.raises(DataError, match=r"config\.data\.part_mb: is missing"):
        build(config, tmp_path)


def test_model_vocab_smaller_than_the_tokenizer_is_named(tmp_path):
    config = pretrain_config()
    config.model.vocab_size = 500
    with pytest.raises(DataError, match="config.model.vocab_size=500 is smaller"):
        build(config, tmp_path)


def test_model_vocab_zero_takes_the_given_tokenizer_whatever_its_size(tmp_path):
    tokenizer, prepared = build(pretrain_config(), tmp_path)
    config = pretrain_config()
    config.model.vocab_size = 0
    again, _ = build(config, tmp_path)
    assert again.vocab_size == tokenizer.vocab_size == SMALL_VOCAB


def test_a_trained_tokenizer_takes_tokenizer_vocab_size_over_the_models(tmp_path, monkeypatch):
    sizes = []

    def train(sentences, vocab_size, *args, **kwargs):
        sizes.append(vocab_size)
        for _ in sentences:  # read the corpus, as training does
            pass
        raise TokenizerError("stop here: the size is what is checked")

    monkeypatch.setattr(records, "train_sentencepiece", train)
    for model_vocab, tokenizer_vocab in ((0, 300), (500, 0), (500, 300)):
        config = pretrain_config(tokenizer="", tokenizer_vocab_size=tokenizer_vocab)
        config.model.vocab_size = model_vocab
        with pytest.raises(DataError, match="tokenizer of"):
            build(config, tmp_path)
    assert sizes == [300, 500, 300]
    config = pretrain_config(tokenizer="")
    config.model.vocab_size = 0  # nothing says how large a vocabulary to train
    with pytest.raises(DataError, match="config.data.tokenizer_vocab_size"):
        build(config, tmp_path)


def test_corpus_errors_surface_through_build(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"Fine first line. Yes.\n\xff\xfe broken\n")
    with pytest.raises(DataError, match=r"bad.txt:2: not valid UTF-8"):
        build(pretrain_config(train_files=str(tmp_path / "bad.txt")), tmp_path)
    # Nothing a later run would trust: no shard of the bad part, no summary (the eval part,
    # prepared alongside, is complete and kept).
    assert not list((tmp_path / "data").glob("examples-*/train/part-*"))
    assert not list((tmp_path / "data").glob("examples-*/summary.json"))
