"""Sequence packing: a packed instance is computed exactly as if it had a row to itself.

Model: encoder outputs, MLM and NSP logits of each packed instance equal running it alone;
nothing crosses instance boundaries; the loss of a packed batch equals the unpacked loss.
Data: the packer's invariants, the packed layout, masks never on a packed [CLS]/[SEP]/[PAD]
(static and dynamic), the step runners and the pretraining command with packing on.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert import objectives, partitioning, train
from bert.config import model_config
from bert.data import BATCH_KEYS, PACKING_KEYS, build
from bert.data.instances import Instances
from bert.data.packing import pack, pack_indices, pack_layout
from bert.data.pipeline import train_dataset
from bert.metrics import read_metrics
from bert.model import BertConfig, BertForPreTraining, BertModel, init_params
from bert.optim import OptimizerSettings, make_optimizer
from tests.fakes import tiny_config
from tests.test_data_support import pretrain_config
from tests.test_pretrain_cli import _pretrain

CLS, SEP, PAD = 2, 3, 0
SEQ, PREDICTIONS, SLOTS = 16, 4, 3
CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=64, max_position_embeddings=32, dropout_rate=0.0,
                    attention_dropout_rate=0.0)


def random_instances(lengths, seed=0, seq_len=SEQ):
    """`[CLS] A [SEP] B [SEP]` rows of random ordinary tokens with the given lengths."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), seq_len), PAD, np.int32)
    segments = np.zeros((len(lengths), seq_len), np.int8)
    for row, length in enumerate(lengths):
        split = int(rng.integers(2, length - 2))  # position of the first [SEP]
        ids[row, :length] = rng.integers(5, CONFIG.vocab_size, length)
        ids[row, [0, split, length - 1]] = [CLS, SEP, SEP]
        segments[row, split + 1:length] = 1
    return Instances(ids, segments, np.asarray(lengths, np.int32),
                     rng.integers(0, 2, len(lengths)).astype(np.int32))


def masked_positions(instances, seed=1):
    """Two ordinary positions to predict per instance (row positions of the unpacked rows)."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(np.flatnonzero(row[:n] > SEP), 2, replace=False))
            for row, n in zip(instances.input_ids, instances.lengths)]


def unpacked_batch(instances, positions):
    n = len(instances)
    lm_positions = np.zeros((n, PREDICTIONS), np.int32)
    lm_weights = np.zeros((n, PREDICTIONS), np.float32)
    for row, chosen in enumerate(positions):
        lm_positions[row, :len(chosen)] = chosen
        lm_weights[row, :len(chosen)] = 1
    return dict(
        input_ids=instances.input_ids, segment_ids=instances.segment_ids.astype(np.int32),
        input_mask=(np.arange(SEQ)[None] < instances.lengths[:, None]).astype(np.int32),
        masked_lm_positions=lm_positions,
        masked_lm_ids=np.take_along_axis(instances.input_ids, lm_positions, 1),
        masked_lm_weights=lm_weights,
        next_sentence_labels=instances.next_sentence_labels,
        next_sentence_weights=np.ones(n, np.float32))


def packed_batch(instances, positions, packs):
    """The same instances and predictions, packed as `packs` [R, K] says."""
    packed = pack(instances, packs, pad_id=PAD)
    layout = pack_layout(packed.instance_lengths, SEQ)
    rows = len(packs)
    lm_positions = np.zeros((rows, PREDICTIONS), np.int32)
    lm_weights = np.zeros((rows, PREDICTIONS), np.float32)
    for row, members in enumerate(packs):
        chosen = [layout["nsp_positions"][row, slot] + positions[i]
                  for slot, i in enumerate(members) if i >= 0]
        chosen = np.concatenate(chosen)
        lm_positions[row, :len(chosen)] = chosen
        lm_weights[row, :len(chosen)] = 1
    return dict(
        input_ids=packed.input_ids, segment_ids=packed.segment_ids.astype(np.int32),
        input_mask=(np.arange(SEQ)[None] < packed.lengths[:, None]).astype(np.int32),
        masked_lm_positions=lm_positions,
        masked_lm_ids=np.take_along_axis(packed.input_ids, lm_positions, 1),
        masked_lm_weights=lm_weights,
        next_sentence_labels=packed.next_sentence_labels,
        next_sentence_weights=layout.pop("nsp_weights"), **layout)


@pytest.fixture(scope="module")
def params():
    return init_params(BertForPreTraining(CONFIG), jax.random.key(0))


def encode(params, batch):
    packed = {k: batch[k] for k in ("position_ids", "pack_ids") if k in batch}
    return BertModel(CONFIG).apply(
        {"params": params["bert"]}, batch["input_ids"], batch["segment_ids"],
        batch["input_mask"], cls_positions=batch.get("nsp_positions"), **packed)


def heads(params, batch):
    inputs = {k: batch[k] for k in (*train.MODEL_INPUTS, *train.PACKED_INPUTS) if k in batch}
    return BertForPreTraining(CONFIG).apply({"params": params}, **inputs)


def test_a_packed_row_computes_each_instance_as_if_alone(params):
    instances = random_instances([9, 6])
    positions = masked_positions(instances)
    alone = unpacked_batch(instances, positions)
    together = packed_batch(instances, positions, np.array([[0, 1, -1]]))
    assert together["input_ids"].shape == (1, SEQ)

    separate, packed = encode(params, alone), encode(params, together)
    np.testing.assert_allclose(packed.sequence_output[0, :9], separate.sequence_output[0, :9],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed.sequence_output[0, 9:15], separate.sequence_output[1, :6],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed.pooled_output[0, :2], separate.pooled_output,
                               atol=1e-5, rtol=0)

    mlm_alone, nsp_alone = heads(params, alone)
    mlm_packed, nsp_packed = heads(params, together)
    assert nsp_packed.shape == (1, SLOTS, 2)
    np.testing.assert_allclose(mlm_packed[0, :4], mlm_alone[:, :2].reshape(4, -1),
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(nsp_packed[0, :2], nsp_alone, atol=1e-5, rtol=0)


def test_attention_does_not_cross_instance_boundaries(params):
    instances = random_instances([7, 8])
    together = packed_batch(instances, masked_positions(instances), np.array([[0, 1, -1]]))
    changed = dict(together, input_ids=together["input_ids"].copy())
    changed["input_ids"][0, 8:14] = np.random.default_rng(5).integers(5, 100, 6)  # inside B2
    before, after = encode(params, together), encode(params, changed)
    np.testing.assert_array_equal(before.sequence_output[0, :7], after.sequence_output[0, :7])
    assert not np.allclose(before.sequence_output[0, 7:15], after.sequence_output[0, 7:15])


def test_loss_of_packed_rows_equals_the_unpacked_loss(params):
    instances = random_instances([10, 5, 7, 9, 6, 5])
    positions = masked_positions(instances)
    alone = unpacked_batch(instances, positions)
    packs = pack_indices(instances.lengths, max_seq_len=SEQ, max_instances=SLOTS, seed=0)
    together = packed_batch(instances, positions, packs)
    assert len(packs) < len(instances)
    loss_fn = train.make_loss_fn(train.PretrainingTask(BertForPreTraining(CONFIG), 1.0))
    results = []
    for batch in (alone, together):
        results.append(loss_fn(params, batch, None, objectives.batch_denominators(batch)))
    (loss_alone, sums_alone), (loss_packed, sums_packed) = results
    assert float(sums_packed["nsp_count"]) == len(instances) == float(sums_alone["nsp_count"])
    assert float(sums_packed["mlm_count"]) == 2 * len(instances)
    np.testing.assert_allclose(loss_packed, loss_alone, atol=1e-5, rtol=0)
    for key in objectives.SUM_KEYS:
        np.testing.assert_allclose(sums_packed[key], sums_alone[key], atol=1e-5, rtol=0,
                                   err_msg=key)


def test_layout_restarts_positions_at_every_cls():
    layout = pack_layout(np.array([[3, 2, 0], [7, 0, 0]]), seq_len=7)
    np.testing.assert_array_equal(layout["pack_ids"], [[1, 1, 1, 2, 2, 0, 0],
                                                       [1, 1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(layout["position_ids"], [[0, 1, 2, 0, 1, 0, 0],
                                                           [0, 1, 2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(layout["nsp_positions"], [[0, 3, 0], [0, 0, 0]])
    np.testing.assert_array_equal(layout["nsp_weights"], [[1, 1, 0], [1, 0, 0]])


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(5, 64), min_size=1, max_size=300),
       max_instances=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_packer_keeps_every_instance_once_within_both_caps(lengths, max_instances, seed):
    lengths = np.array(lengths)
    packs = pack_indices(lengths, max_seq_len=64, max_instances=max_instances, seed=seed)
    members = packs[packs >= 0]
    assert sorted(members.tolist()) == list(range(len(lengths)))
    assert packs.shape[1] == max_instances
    assert (np.where(packs >= 0, lengths[packs], 0).sum(1) <= 64).all()
    assert ((packs >= 0).sum(1) >= 1).all()
    assert (np.diff((packs >= 0).astype(int), axis=1) <= 0).all()  # empty slots come last
    np.testing.assert_array_equal(
        packs, pack_indices(lengths, max_seq_len=64, max_instances=max_instances, seed=seed))
    # A row is only opened for an instance no earlier row had room and a free slot for: rows
    # are in opening order, and each one's first instance is the one it was opened for.
    room = 64 - np.where(packs >= 0, lengths[packs], 0).sum(1)
    slots_free = (packs < 0).sum(1) > 0
    opener = lengths[packs[:, 0]]
    earlier = np.tri(len(packs), k=-1, dtype=bool).T  # earlier[q, r]: row q opened before r
    could_take = (opener[None, :] <= room[:, None]) & slots_free[:, None]
    assert not (earlier & could_take).any()


def test_packed_rows_hold_their_instances_back_to_back():
    instances = random_instances([5, 9, 6, 12, 7, 8, 5], seed=3)
    packs = pack_indices(instances.lengths, max_seq_len=SEQ, max_instances=SLOTS, seed=1)
    packed = pack(instances, packs, pad_id=PAD)
    for row, members in enumerate(packs):
        real = [i for i in members if i >= 0]
        ids = np.concatenate([instances.input_ids[i, :instances.lengths[i]] for i in real])
        segments = np.concatenate([instances.segment_ids[i, :instances.lengths[i]]
                                   for i in real])
        assert packed.lengths[row] == len(ids)
        np.testing.assert_array_equal(packed.input_ids[row, :len(ids)], ids)
        np.testing.assert_array_equal(packed.segment_ids[row, :len(ids)], segments)
        assert (packed.input_ids[row, len(ids):] == PAD).all()
        np.testing.assert_array_equal(packed.next_sentence_labels[row, :len(real)],
                                      instances.next_sentence_labels[real])


@pytest.fixture(scope="module", params=["dynamic", "static"])
def packed_data(request, tmp_path_factory):
    # 128 tokens: the shipped addresses' sentences average ~29 tokens and a pair needs two, so
    # at 64 tokens nearly every instance is full-length whatever short_seq_prob says.
    config = pretrain_config(packing=True, max_instances_per_pack=SLOTS, short_seq_prob=1.0,
                             masking=request.param)
    config.max_seq_len, config.max_predictions_per_seq = 128, 20
    return build(config, tmp_path_factory.mktemp(f"packed-{request.param}"))


def test_pipeline_batches_of_packed_rows(packed_data):
    tokenizer, prepared = packed_data
    summary = prepared.summary["train"]
    assert summary["packed_padding_fraction"] < 0.7 * summary["padding_fraction"]
    assert prepared.eval.instance_lengths is None  # eval stays unpacked
    assert int(prepared.train.instance_lengths.astype(bool).sum()) == summary["instances"]
    batch = train_dataset(prepared, batch_size_per_host=64, seed=0)[0]
    assert set(batch) == {*BATCH_KEYS, *PACKING_KEYS}
    ids, weights = batch["input_ids"], batch["next_sentence_weights"]
    assert weights.shape == batch["next_sentence_labels"].shape == (64, SLOTS)
    assert batch["pack_ids"].max() >= 2  # some rows hold several instances
    cls_at = np.take_along_axis(ids, batch["nsp_positions"], 1)
    assert (cls_at[weights > 0] == tokenizer.cls_id).all()
    assert (np.take_along_axis(batch["position_ids"], batch["nsp_positions"], 1) == 0).all()
    assert ((ids == tokenizer.cls_id) == (batch["position_ids"] == 0)
            & (batch["pack_ids"] > 0)).all()
    # No mask lands on any packed instance's [CLS]/[SEP], or on padding.
    real = batch["masked_lm_weights"] > 0
    assert real.sum() > 0.9 * 0.15 * (batch["input_mask"].sum() - 3 * weights.sum())
    predicted = batch["masked_lm_ids"][real]
    assert not np.isin(predicted, [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id]).any()
    at = np.take_along_axis(batch["pack_ids"], batch["masked_lm_positions"], 1)
    assert (at[real] > 0).all()


def test_jit_and_pmap_runners_take_packed_batches():
    overrides = {"model.num_layers": 1, "model.hidden_size": 32, "model.dropout_rate": 0.0,
                 "model.attention_dropout_rate": 0.0, "max_predictions_per_seq": PREDICTIONS,
                 "data.packing": True, "data.max_instances_per_pack": SLOTS}
    instances = random_instances(np.random.default_rng(0).integers(5, 9, 24), seed=4)
    packs = pack_indices(instances.lengths, max_seq_len=SEQ, max_instances=SLOTS, seed=0)[:8]
    batch = packed_batch(instances, masked_positions(instances), packs)
    sums = {}
    for parallelism in ("jit", "pmap"):  # jit: data parallel over the 8 fake devices
        config = tiny_config(**overrides, parallelism=parallelism)
        assert set(partitioning.batch_shapes(config, 8)) == set(batch)
        model, tx = train.PretrainingTask(BertForPreTraining(model_config(config)), 1.0), make_optimizer(OptimizerSettings.from_config(config))
        runner = partitioning.build_runner(config, model, tx)
        state = runner.init_state(jax.random.key(0))
        _, sums[parallelism] = runner.train_step(state, batch, jax.random.key(1))
    for key in objectives.SUM_KEYS:
        np.testing.assert_allclose(sums["pmap"][key], sums["jit"][key], rtol=1e-5, err_msg=key)
    assert float(sums["jit"]["nsp_count"]) == float((packs >= 0).sum())


def test_pretrain_command_runs_with_packing(tmp_path):
    _pretrain(tmp_path, "--config.train_steps=2", "--config.data.packing=True",
              "--config.data.short_seq_prob=0.5")
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [2] and np.isfinite(rows[0]["loss"])
    assert 0.0 <= rows[0]["nsp_accuracy"] <= 1.0


def test_packing_settings_are_validated_naming_the_key():
    from bert.config import validate

    validate(tiny_config(**{"data.packing": True}))
    with pytest.raises(ValueError, match="config.max_predictions_per_seq"):
        validate(tiny_config(**{"data.packing": True, "max_seq_len": 32}))  # 3 slots < 4 masks
    with pytest.raises(ValueError, match="config.data.max_instances_per_pack"):
        validate(tiny_config(**{"data.max_instances_per_pack": 0}))
