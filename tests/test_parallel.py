"""Parallel step wrappers on 8 fake CPU devices: every layout takes the same steps as 1 device.

From the same params and the same global batches, 3 steps give the same losses and params for
jit over 1 device, pmap over 8, jit data=8, jit data=2 x fsdp=2 x tensor=2, jit fsdp=8 and
gradient accumulation; params sit where the rules say; checkpoints move between runners.
"""
from __future__ import annotations

import collections

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert import checkpoint, objectives, partitioning, train
from bert.config import model_config
from bert.model import BertForPreTraining, count_params
from bert.optim import OptimizerSettings, make_optimizer
from tests.fakes import random_batch, tiny_config

STEPS = 3
GLOBAL_BATCH = 32
# A one-layer encoder: the layouts are what is tested, and compiling eight programs on two
# CPU cores is the cost of this file.
SMALL = {"model.num_layers": 1, "model.hidden_size": 32, "model.num_heads": 2,
         "model.dropout_rate": 0.0, "model.attention_dropout_rate": 0.0,
         "batch_size": GLOBAL_BATCH}

LAYOUTS = {
    "jit data=8": {},
    "pmap x8": {"parallelism": "pmap"},
    "jit data=2 fsdp=2 tensor=2": {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2},
    "jit fsdp=8": {"mesh.data": 1, "mesh.fsdp": 8},
    "jit data=8 grad_accum=4": {"grad_accum_steps": 4},
}

# Half the CPU compile time; every layout compiles the same way, so they still compare exactly.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

Run = collections.namedtuple("Run", "runner state losses")


def _config(**overrides):
    return tiny_config(**{**SMALL, **overrides})


def _model_and_optimizer(config):
    task = train.PretrainingTask(BertForPreTraining(model_config(config)), config.data.nsp_weight)
    return task, make_optimizer(OptimizerSettings.from_config(config))


@pytest.fixture(scope="module")
def initial_state():
    """One set of initial params and optimizer state, on the host, shared by every layout."""
    config = _config()
    model, tx = _model_and_optimizer(config)
    return jax.device_get(train.create_train_state(model, tx, jax.random.key(0)))


@pytest.fixture(scope="module")
def batches():
    return [random_batch(batch_size=GLOBAL_BATCH, seed=step) for step in range(STEPS)]


def _train(config, initial_state, batches, devices=None) -> Run:
    model, tx = _model_and_optimizer(config)
    runner = partitioning.build_runner(config, model, tx, devices, FAST_COMPILE)
    state = jax.device_put(initial_state, runner.state_shardings)
    losses = []
    for batch in batches:
        state, sums = runner.train_step(state, batch, jax.random.key(1))
        losses.append(objectives.finalize_metrics(jax.device_get(sums), 1.0)["loss"])
    return Run(runner, state, losses)


@pytest.fixture(scope="module")
def one_device(initial_state, batches):
    return _train(_config(), initial_state, batches, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def runs(initial_state, batches):
    return {name: _train(_config(**overrides), initial_state, batches)
            for name, overrides in LAYOUTS.items()}


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_takes_the_same_steps_as_one_device(layout, runs, one_device, initial_state):
    run = runs[layout]
    assert len(jax.tree.leaves(run.state.params)[0].sharding.device_set) == 8
    np.testing.assert_allclose(run.losses, one_device.losses, rtol=1e-6)
    moved = 0.0
    for ours, reference, start in zip(_leaves(run.state.params), _leaves(one_device.state.params),
                                      _leaves(initial_state.params)):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-5)
        moved = max(moved, float(np.max(np.abs(reference - start))))
    assert moved > 100 * 2e-5  # the tolerance is far below what 3 steps change
    assert int(run.state.step) == STEPS


def test_pmap_and_jit_evaluate_alike(runs, batches):
    jit_run, pmap_run = runs["jit data=8"], runs["pmap x8"]
    jit_sums = jax.device_get(jit_run.runner.eval_step(jit_run.state.params, batches[0])[0])
    pmap_sums = jax.device_get(pmap_run.runner.eval_step(pmap_run.state.params, batches[0])[0])
    for key in objectives.SUM_KEYS:
        np.testing.assert_allclose(pmap_sums[key], jit_sums[key], rtol=1e-5, err_msg=key)


def _param(state, *path):
    node = state.params
    for key in path:
        node = node[key]
    return node


def test_params_and_optimizer_state_are_sharded_as_the_rules_say(runs):
    fsdp = runs["jit fsdp=8"].state
    table = _param(fsdp, "bert", "embeddings", "word_embeddings", "embedding")  # (V=100, H=32)
    assert table.sharding.spec == P("tensor", "fsdp")
    assert table.addressable_shards[0].data.shape == (100, 4)
    qkv = _param(fsdp, "bert", "layer_0", "attention", "qkv", "kernel")  # (H, 3, N, D)
    assert qkv.sharding.spec == P("fsdp", None, "tensor", None)
    assert qkv.addressable_shards[0].data.shape == (4, 3, 2, 16)

    mixed = runs["jit data=2 fsdp=2 tensor=2"].state
    intermediate = _param(mixed, "bert", "layer_0", "mlp", "intermediate", "kernel")  # (H, I)
    assert intermediate.sharding.spec == P("fsdp", "tensor")
    assert intermediate.addressable_shards[0].data.shape == (16, 64)
    out = _param(mixed, "bert", "layer_0", "attention", "out", "kernel")  # (N, D, H)
    assert out.sharding.spec == P("tensor", None, "fsdp")
    assert out.addressable_shards[0].data.shape == (1, 16, 16)
    # Adam's moments follow their params.
    adam = next(s for s in jax.tree.leaves(mixed.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
                if hasattr(s, "mu"))
    moment = adam.mu["bert"]["layer_0"]["mlp"]["intermediate"]["kernel"]
    assert moment.sharding == intermediate.sharding

    pmap_table = _param(runs["pmap x8"].state, "bert", "embeddings", "word_embeddings",
                        "embedding")
    assert pmap_table.sharding.is_fully_replicated and pmap_table.shape == (100, 32)


def test_a_dimension_the_mesh_does_not_divide_is_replicated_with_a_note():
    config = _config(**{"mesh.data": 1, "mesh.tensor": 8})
    runner = partitioning.build_runner(config, *_model_and_optimizer(config))
    params = runner.state_shardings.params
    # 100 words and 2 heads do not split 8 ways; 128 MLP columns do.
    assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].spec == P(None, "fsdp")
    assert params["bert"]["layer_0"]["attention"]["qkv"]["kernel"].spec == P("fsdp", None, None, None)
    assert params["bert"]["layer_0"]["mlp"]["intermediate"]["kernel"].spec == P("fsdp", "tensor")
    notes = "\n".join(runner.replicated_notes)
    assert "word_embeddings/embedding: config.mesh.tensor=8 does not divide its vocab" in notes


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 12}, r"config\.batch_size=12 \(global\) is not divisible by 8"),
    ({"batch_size": 16, "grad_accum_steps": 4},
     r"config\.batch_size=16 .* config\.grad_accum_steps=4.*config\.batch_size=32"),
    ({"batch_size": 8, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "grad_accum_steps": 4},
     r"config\.batch_size=8 .*config\.mesh\.data=2 x config\.mesh\.fsdp=2"),
    ({"batch_size": 4, "parallelism": "pmap"}, r"config\.batch_size=4 .*\(8 devices\)"),
    ({"parallelism": "pmap", "mesh.data": 4, "mesh.fsdp": 2}, r"config\.mesh\.fsdp=2"),
    ({"mesh.data": 3}, r"config\.mesh .* needs 3 devices but 8"),
])
def test_bad_layouts_are_refused_before_compiling(overrides, message):
    config = _config(**overrides)
    with pytest.raises(ValueError, match=message):
        partitioning.build_runner(config, *_model_and_optimizer(config))


def test_a_host_batch_of_the_wrong_size_is_refused(runs):
    runner = runs["jit data=8"].runner
    with pytest.raises(ValueError, match=r"'input_ids' has shape \(16, 16\).* is 32 rows"):
        runner.place_batch(random_batch(batch_size=16))


class _FakeDevice(collections.namedtuple("_FakeDevice", "id process_index")):
    pass


def test_each_process_must_hold_its_own_block_of_the_batch():
    devices = [_FakeDevice(i, i // 4) for i in range(8)]  # 2 processes x 4 devices
    # data=2 x tensor=4: process p holds batch shard p, the rows the pipeline gives it.
    partitioning._check_host_blocks({d: d.id // 4 for d in devices}, num_shards=2)
    # data=4 x tensor=2 laid across processes the other way round: refused, naming config.mesh.
    interleaved = {d: d.id % 4 for d in devices}
    with pytest.raises(ValueError, match=r"config\.mesh: process 0 holds batch shards \[0, 1, 2, 3\]"):
        partitioning._check_host_blocks(interleaved, num_shards=4)


@pytest.mark.parametrize("writer, reader", [("jit fsdp=8", "pmap x8"), ("pmap x8", "jit data=2 fsdp=2 tensor=2")])
def test_checkpoints_move_between_runners(writer, reader, runs, tmp_path):
    saved = runs[writer].state
    manager = checkpoint.CheckpointManager(str(tmp_path), keep=1, async_save=False)
    manager.save(STEPS, saved, {"step": STEPS}, force=True)
    target = runs[reader].runner
    restored, meta = manager.restore(STEPS, target.abstract_state)
    manager.close()
    assert meta["step"] == STEPS
    for ours, wanted, theirs in zip(jax.tree.leaves(restored),
                                    jax.tree.leaves(target.abstract_state), jax.tree.leaves(saved)):
        assert ours.sharding == wanted.sharding and ours.shape == theirs.shape
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_memory_analysis_of_an_fsdp_step_counts_a_shard_of_params_and_optimizer_state():
    config = _config(**{"mesh.data": 1, "mesh.fsdp": 8})
    model, tx = _model_and_optimizer(config)
    report = partitioning.step_memory(
        partitioning.build_runner(config, model, tx, None, FAST_COMPILE), config)
    whole = 4 * count_params(model.model)  # float32 bytes of all params
    assert whole / 8 <= report.params < whole / 4  # biases of the MLP columns split only by tensor
    assert 2 * report.params <= report.opt_state <= 2 * report.params + 64  # Adam: 2 moments
    assert report.temp > 0 and report.peak >= report.params + report.opt_state + report.temp
