"""Input pipeline: the batch contract, exact resume, host shards, epochs, workers, eval."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bert.data import (BATCH_KEYS, DataError, build, eval_batches, per_host_batch_size,
                       unigram_baseline)
from bert.data.pipeline import train_batches, train_dataset
from tests.test_data_support import pretrain_config

SEQ, PREDICTIONS = 64, 10


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    return build(pretrain_config(), tmp_path_factory.mktemp("dynamic"))


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    return build(pretrain_config(masking="static"), tmp_path_factory.mktemp("static"))


def take(iterator, count):
    batches = list(itertools.islice(iterator, count))
    iterator.close()
    return batches


def assert_same(batch, other):
    assert batch.keys() == other.keys()
    for key in batch:
        np.testing.assert_array_equal(batch[key], other[key], err_msg=key)


def unmasked(batch):
    """The stored rows behind a batch: masked positions put back to their original ids."""
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_lm_weights"] > 0)
    ids[rows, batch["masked_lm_positions"][rows, slots]] = batch["masked_lm_ids"][rows, slots]
    return ids


def row_index(prepared):
    """Stored row bytes → row number, to recognise which examples a batch holds."""
    table = {row.tobytes(): i for i, row in enumerate(np.asarray(prepared.train.input_ids))}
    assert len(table) == len(prepared.train)  # rows are distinct, so identity is well defined
    return lambda batch: [table[row.tobytes()] for row in unmasked(batch)]


def test_batches_follow_the_contract(dynamic):
    tokenizer, prepared = dynamic
    batch = next(train_batches(prepared, batch_size_per_host=8, seed=0))
    dtypes = {"input_ids": np.int32, "input_mask": np.int32, "segment_ids": np.int32,
              "masked_lm_positions": np.int32, "masked_lm_ids": np.int32,
              "masked_lm_weights": np.float32, "next_sentence_labels": np.int32,
              "next_sentence_weights": np.float32}
    shapes = {"input_ids": (8, SEQ), "input_mask": (8, SEQ), "segment_ids": (8, SEQ),
              "masked_lm_positions": (8, PREDICTIONS), "masked_lm_ids": (8, PREDICTIONS),
              "masked_lm_weights": (8, PREDICTIONS), "next_sentence_labels": (8,),
              "next_sentence_weights": (8,)}
    assert tuple(batch) == BATCH_KEYS
    for key in BATCH_KEYS:
        assert type(batch[key]) is np.ndarray, key
        assert batch[key].dtype == dtypes[key] and batch[key].shape == shapes[key], key
    rows = row_index(prepared)(batch)
    lengths = prepared.train.lengths[rows]
    np.testing.assert_array_equal(batch["input_mask"].sum(1), lengths)
    np.testing.assert_array_equal(batch["segment_ids"], prepared.train.segment_ids[rows])
    np.testing.assert_array_equal(batch["next_sentence_labels"],
                                  prepared.train.next_sentence_labels[rows])
    assert (batch["next_sentence_weights"] == 1.0).all()
    real = batch["masked_lm_weights"] > 0
    assert (real.sum(1) >= 1).all()
    shown = np.take_along_axis(batch["input_ids"], batch["masked_lm_positions"], 1)[real]
    assert np.mean(shown == tokenizer.mask_id) > 0.6
    positions = np.where(real, batch["masked_lm_positions"], SEQ)
    assert (np.diff(positions, axis=1) > 0)[real[:, 1:]].all()  # ascending among real slots


def test_resuming_at_step_s_gives_the_batch_an_uninterrupted_run_gives(dynamic):
    _, prepared = dynamic
    straight = take(train_batches(prepared, batch_size_per_host=8, seed=3), 9)
    resumed = take(train_batches(prepared, batch_size_per_host=8, seed=3, start_step=6), 3)
    for step in range(6, 9):
        assert_same(straight[step], resumed[step - 6])
    dataset = train_dataset(prepared, batch_size_per_host=8, seed=3)
    assert_same({k: np.asarray(v) for k, v in dataset[7].items()}, straight[7])
    other_seed = take(train_batches(prepared, batch_size_per_host=8, seed=4), 1)[0]
    assert not np.array_equal(other_seed["input_ids"], straight[0]["input_ids"])


def test_two_hosts_read_disjoint_halves_of_the_same_global_batch(dynamic):
    _, prepared = dynamic
    identify = row_index(prepared)
    steps = len(prepared.train) // 8  # one epoch of global batches of 8
    single = train_dataset(prepared, batch_size_per_host=8, seed=0)
    hosts = [train_dataset(prepared, batch_size_per_host=4, seed=0, process_index=h,
                           process_count=2) for h in range(2)]
    seen = [[], []]
    for step in range(steps):
        whole = single[step]
        for h, host in enumerate(hosts):
            part = host[step]
            for key in BATCH_KEYS:
                np.testing.assert_array_equal(part[key], whole[key][4 * h:4 * h + 4])
            seen[h].extend(identify(part))
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == steps * 8  # no repeats within the epoch


def test_each_epoch_is_a_new_permutation_with_fresh_dynamic_masks(dynamic):
    _, prepared = dynamic
    identify = row_index(prepared)
    n = len(prepared.train)
    dataset = train_dataset(prepared, batch_size_per_host=n, seed=0)  # one batch = one epoch
    first, second = dataset[0], dataset[1]
    order_first, order_second = identify(first), identify(second)
    assert sorted(order_first) == sorted(order_second) == list(range(n))
    assert order_first != order_second
    again = {row: i for i, row in enumerate(order_second)}
    moved = [again[row] for row in order_first]
    same_mask = np.mean([np.array_equal(first["masked_lm_positions"][i],
                                        second["masked_lm_positions"][j])
                         for i, j in enumerate(moved)])
    assert same_mask < 0.1


def test_static_masks_come_from_the_store_every_epoch(static):
    _, prepared = static
    identify = row_index(prepared)
    n = len(prepared.train)
    dataset = train_dataset(prepared, batch_size_per_host=n, seed=0)
    for epoch in range(2):
        batch = dataset[epoch]
        rows = identify(batch)
        np.testing.assert_array_equal(batch["masked_lm_positions"],
                                      prepared.train.masked_lm_positions[rows])
        np.testing.assert_array_equal(batch["masked_lm_ids"], prepared.train.masked_lm_ids[rows])


def test_worker_processes_give_identical_batches(dynamic):
    _, prepared = dynamic
    in_process = take(train_batches(prepared, batch_size_per_host=8, seed=1, start_step=5), 4)
    workers = take(train_batches(prepared, batch_size_per_host=8, seed=1, start_step=5,
                                 num_workers=2), 4)
    for a, b in zip(in_process, workers):
        assert_same(a, b)
        assert all(type(v) is np.ndarray for v in b.values())


def test_eval_covers_every_row_once_with_zero_weight_padding(dynamic):
    _, prepared = dynamic
    n = len(prepared.eval)
    batches = eval_batches(prepared, batch_size_per_host=16, seed=0)
    assert len(batches) == -(-n // 16)
    weights = np.concatenate([b["next_sentence_weights"] for b in batches])
    assert weights.sum() == n and (weights[:n] == 1).all() and (weights[n:] == 0).all()
    ids = np.concatenate([unmasked(b) for b in batches])
    np.testing.assert_array_equal(ids[:n], prepared.eval.input_ids)
    padding = np.concatenate([b["masked_lm_weights"] for b in batches])[n:]
    assert (padding == 0).all() and (ids[n:] == 0).all()
    assert all(b["input_ids"].dtype == np.int32 for b in batches)
    for a, b in zip(batches, eval_batches(prepared, batch_size_per_host=16, seed=0)):
        assert_same(a, b)
    hosts = [eval_batches(prepared, batch_size_per_host=8, seed=0, process_index=h,
                          process_count=2) for h in range(2)]
    assert len(hosts[0]) == len(hosts[1]) == len(batches)
    for step, batch in enumerate(batches):
        for h in range(2):
            assert_same(hosts[h][step], {k: v[8 * h:8 * h + 8] for k, v in batch.items()})


def test_batch_sizes_are_checked(dynamic):
    _, prepared = dynamic
    assert per_host_batch_size(64, 4) == 16
    with pytest.raises(DataError, match="config.batch_size=10 is the global batch"):
        per_host_batch_size(10, 4)
    with pytest.raises(DataError, match="fewer than one global batch"):
        train_dataset(prepared, batch_size_per_host=len(prepared.train), seed=0,
                      process_count=2)
    with pytest.raises(DataError, match="process_index=2"):
        train_dataset(prepared, batch_size_per_host=4, seed=0, process_index=2,
                      process_count=2)


def test_unigram_baseline_predicts_the_commonest_training_token(dynamic):
    import collections
    import math

    tokenizer, prepared = dynamic
    batches = eval_batches(prepared, batch_size_per_host=8, seed=0)
    baseline = unigram_baseline(prepared, batches)
    special = {tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id}
    counts = collections.Counter(int(t) for row in np.asarray(prepared.train.input_ids)
                                 for t in row if int(t) not in special)
    commonest, _ = counts.most_common(1)[0]
    targets = [int(t) for b in batches for t, w in zip(b["masked_lm_ids"].ravel(),
                                                       b["masked_lm_weights"].ravel()) if w]
    assert baseline["unigram_mlm_accuracy"] == pytest.approx(
        sum(t == commonest for t in targets) / len(targets))
    total = sum(counts.values()) + (prepared.vocab.vocab_size - len(prepared.vocab.special_ids))
    expected = -sum(math.log((counts[t] + 1) / total) for t in targets) / len(targets)
    assert baseline["unigram_mlm_loss"] == pytest.approx(expected, rel=1e-9)
    assert baseline["unigram_mlm_loss"] < math.log(tokenizer.vocab_size)  # beats uniform
