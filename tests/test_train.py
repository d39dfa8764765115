"""The loss function and the train step: learning, accumulation, non-finite handling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert import objectives, train
from bert.config import model_config
from bert.model import BertForPreTraining
from bert.optim import OptimizerSettings, decay_mask, learning_rate_schedule, make_optimizer
from tests.fakes import random_batch, tiny_config


def _setup(**overrides):
    config = tiny_config(**overrides)
    model = BertForPreTraining(model_config(config))
    tx = make_optimizer(OptimizerSettings.from_config(config))
    state = train.create_train_state(train.PretrainingTask(model, 1.0), tx, jax.random.key(0))
    return config, model, tx, state


# LAMB scales each layer's step by its weight norm, so it needs a larger nominal rate.
@pytest.mark.parametrize("optimizer, learning_rate", [("adamw", 3e-3), ("lamb", 3e-2)])
def test_loss_falls_when_overfitting_one_batch(optimizer, learning_rate):
    config, model, tx, state = _setup(**{"optim.name": optimizer, "learning_rate": learning_rate})
    step = jax.jit(train.make_train_step(train.PretrainingTask(model, 1.0), tx))
    batch = random_batch()
    losses = []
    for _ in range(60):
        state, sums = step(state, batch, jax.random.key(1))
        losses.append(objectives.finalize_metrics(jax.device_get(sums), 1.0)["loss"])
    assert losses[-1] < 0.25 * losses[0], losses
    assert int(state.step) == 60


def test_grad_accumulation_equals_one_big_batch():
    config, model, tx, state = _setup(**{"model.dropout_rate": 0.0, "model.attention_dropout_rate": 0.0})
    batch = random_batch(batch_size=8)
    one = jax.jit(train.make_train_step(train.PretrainingTask(model, 1.0), tx))
    four = jax.jit(train.make_train_step(train.PretrainingTask(model, 1.0), tx, grad_accum_steps=4))
    state_one, state_four = state, state
    for _ in range(3):
        state_one, sums_one = one(state_one, batch, jax.random.key(1))
        state_four, sums_four = four(state_four, batch, jax.random.key(1))
        np.testing.assert_allclose(sums_one["mlm_loss_sum"], sums_four["mlm_loss_sum"], rtol=1e-5)
    # Summation order differs, and Adam's normalised step turns rounding in near-zero gradients
    # into up to ~lr of difference: a few 1e-6 after three steps.
    for a, b in zip(jax.tree.leaves(state_one.params), jax.tree.leaves(state_four.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_nonfinite_step_leaves_params_and_optimizer_untouched():
    config, model, tx, state = _setup()
    step = jax.jit(train.make_train_step(train.PretrainingTask(model, 1.0), tx))
    state, _ = step(state, random_batch(), jax.random.key(1))
    poisoned = jax.tree.map(lambda x: x, state)
    table = poisoned.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    poisoned = poisoned.replace(params=jax.tree.map(lambda x: x, poisoned.params))
    poisoned.params["bert"]["embeddings"]["word_embeddings"]["embedding"] = table.at[7].set(jnp.nan)
    batch = random_batch()
    batch["input_ids"][0, 1] = 7
    after, sums = step(poisoned, batch, jax.random.key(2))
    assert float(sums["nonfinite"]) == 1.0
    assert int(after.step) == int(poisoned.step) + 1
    for a, b in zip(jax.tree.leaves((after.params, after.opt_state)),
                    jax.tree.leaves((poisoned.params, poisoned.opt_state))):
        np.testing.assert_array_equal(a, b)


def test_zero_nsp_weight_turns_nsp_off():
    _, model, tx, state = _setup()
    loss_fn = train.make_loss_fn(train.PretrainingTask(model, 0.0))
    batch = random_batch()
    denominators = objectives.batch_denominators(batch)
    loss, sums = loss_fn(state.params, batch, None, denominators)
    np.testing.assert_allclose(loss, sums["mlm_loss_sum"] / denominators[0], rtol=1e-6)
    grads = jax.grad(lambda p: loss_fn(p, batch, None, denominators)[0])(state.params)
    assert not np.any(np.asarray(grads["nsp"]["kernel"]))


def test_padded_prediction_slots_do_not_count():
    _, model, tx, state = _setup()
    loss_fn = train.make_loss_fn(train.PretrainingTask(model, 1.0))
    batch = random_batch()
    changed = {k: v.copy() for k, v in batch.items()}
    unused = batch["masked_lm_weights"] == 0
    changed["masked_lm_ids"][unused] = 42
    changed["masked_lm_positions"][unused] = 5
    a, _ = loss_fn(state.params, batch, None, objectives.batch_denominators(batch))
    b, _ = loss_fn(state.params, changed, None, objectives.batch_denominators(changed))
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_dropout_depends_only_on_seed_and_step():
    _, model, tx, state = _setup()
    step = jax.jit(train.make_train_step(train.PretrainingTask(model, 1.0), tx))
    batch = random_batch()
    _, first = step(state, batch, jax.random.key(3))
    _, again = step(state, batch, jax.random.key(3))
    _, other_seed = step(state, batch, jax.random.key(4))
    assert float(first["mlm_loss_sum"]) == float(again["mlm_loss_sum"])
    assert float(first["mlm_loss_sum"]) != float(other_seed["mlm_loss_sum"])


def test_weight_decay_skips_layer_norm_and_biases():
    _, _, _, state = _setup()
    mask = decay_mask(state.params)
    assert mask["bert"]["layer_0"]["mlp"]["intermediate"]["kernel"]
    assert mask["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert not mask["bert"]["layer_0"]["mlp"]["intermediate"]["bias"]
    assert not mask["bert"]["layer_0"]["attention_norm"]["scale"]
    assert not mask["bert"]["embeddings"]["layer_norm"]["bias"]
    assert not mask["mlm"]["output_bias"]


def test_schedule_warms_up_then_decays_to_zero():
    schedule = learning_rate_schedule(OptimizerSettings.from_config(tiny_config(learning_rate=1e-3, warmup_steps=10, train_steps=110)))
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(5e-4)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-9)


def test_pruned_last_layer_has_the_full_layers_loss_and_gradients():
    """The last block computes only the rows the heads read; nothing the loss sees changes."""
    config, model, tx, state = _setup()
    full = BertForPreTraining(model.config, prune_last_layer=False)
    batch = random_batch(batch_size=4)
    batch["input_mask"][1, -5:] = 0  # padding, so the attention mask matters
    ones = (jnp.float32(1.0), jnp.float32(1.0))
    grad_fns = [jax.jit(jax.grad(train.make_loss_fn(train.PretrainingTask(m, 1.0)), has_aux=True))
                for m in (model, full)]
    (pruned_grads, pruned_sums), (full_grads, full_sums) = [
        fn(state.params, batch, None, ones) for fn in grad_fns]
    for key in objectives.SUM_KEYS:
        np.testing.assert_allclose(pruned_sums[key], full_sums[key], rtol=1e-5, err_msg=key)
    for path, a, b in zip(jax.tree_util.tree_leaves_with_path(pruned_grads),
                          jax.tree.leaves(pruned_grads), jax.tree.leaves(full_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=str(path[0]))
    # And the pruned step really computes fewer rows in the last block.
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply(
        {"params": p}, batch["input_ids"], batch["segment_ids"], batch["input_mask"],
        batch["masked_lm_positions"]))(state.params))
    rows = 1 + batch["masked_lm_positions"].shape[1]
    assert f"f32[4,{rows},{model.config.intermediate_size}]" in jaxpr


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
@pytest.mark.parametrize("clip_norm, grad_scale", [(1.0, 1e-3), (1.0, 10.0), (0.0, 10.0)])
def test_optimizer_matches_optax_reference(optimizer, clip_norm, grad_scale):
    """make_optimizer is optax's chain (same state, so checkpoints interchange) to float rounding,
    with or without the global norm handed in (the train step hands it in), clipping on and off."""
    import optax

    config = tiny_config(**{"optim.name": optimizer, "optim.clip_norm": clip_norm,
                            "learning_rate": 1e-2, "warmup_steps": 1})
    ours = make_optimizer(OptimizerSettings.from_config(config))
    reference = {"adamw": optax.adamw, "lamb": optax.lamb}[optimizer](
        learning_rate_schedule(OptimizerSettings.from_config(config)), b1=config.optim.b1, b2=config.optim.b2,
        eps=config.optim.eps, weight_decay=config.optim.weight_decay, mask=decay_mask)
    if clip_norm:
        reference = optax.chain(optax.clip_by_global_norm(clip_norm), reference)
    keys = iter(jax.random.split(jax.random.key(0), 16))
    params = {"dense": {"kernel": jax.random.normal(next(keys), (8, 4)),
                        "bias": jax.random.normal(next(keys), (4,))},
              "norm": {"scale": jnp.ones((4,))}}
    state_ours, state_ref = ours.init(params), reference.init(params)
    assert jax.tree.structure(state_ours) == jax.tree.structure(state_ref)
    p_ours = p_ref = params
    for step in range(3):
        grads = jax.tree.map(lambda p: grad_scale * jax.random.normal(next(keys), p.shape), params)
        norm = optax.tree.norm(grads) if step % 2 else None  # None: it takes the norm itself
        updates, state_ours = ours.update(grads, state_ours, p_ours, global_norm=norm)
        p_ours = optax.apply_updates(p_ours, updates)
        updates, state_ref = reference.update(grads, state_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, updates)
    for a, b in zip(jax.tree.leaves((p_ours, state_ours)), jax.tree.leaves((p_ref, state_ref))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
