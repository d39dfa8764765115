"""The small-budget recipe's knobs: pre-LayerNorm blocks and the learning-rate schedule shapes.

Each is off by default (post-LN, linear), so the paper's configs are unchanged; each is checked
against a hand computation.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert import objectives, train
from bert.config import model_config, pretraining_config
from bert.model import BertConfig, BertForPreTraining, BertModel, init_params
from bert.optim import OptimizerSettings, learning_rate_schedule
from tests.fakes import random_batch, tiny_config


def _layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _pre_ln_encoder(params, config, input_ids, input_mask):
    """x + attention(LN(x)), then x + mlp(LN(x)) per block, one LayerNorm on top, in numpy."""
    p = jax.tree.map(np.asarray, params["bert"])
    eps, d = config.layer_norm_eps, config.head_size
    t = input_ids.shape[1]
    emb = p["embeddings"]
    x = (emb["word_embeddings"]["embedding"][input_ids] + emb["position_embeddings"]["embedding"][:t]
         + emb["token_type_embeddings"]["embedding"][np.zeros_like(input_ids)])
    x = _layer_norm(x, emb["layer_norm"], eps)
    for i in range(config.num_layers):
        layer = p[f"layer_{i}"]
        h = _layer_norm(x, layer["attention_norm"], eps)
        qkv = np.einsum("bth,hknd->btknd", h, layer["attention"]["qkv"]["kernel"]) + \
            layer["attention"]["qkv"]["bias"]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = np.einsum("btnd,bsnd->bnts", q, k) / math.sqrt(d)
        scores = np.where(input_mask[:, None, None, :] > 0, scores, -1e30)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = np.einsum("bnts,bsnd->btnd", probs, v)
        out = layer["attention"]["out"]
        x = x + np.einsum("btnd,ndh->bth", context, out["kernel"]) + out["bias"]
        h = _layer_norm(x, layer["output_norm"], eps)
        mlp = layer["mlp"]
        h = _gelu(h @ mlp["intermediate"]["kernel"] + mlp["intermediate"]["bias"])
        x = x + h @ mlp["output"]["kernel"] + mlp["output"]["bias"]
    return _layer_norm(x, p["final_norm"], eps)


def test_pre_layer_norm_encoder_matches_a_hand_computation():
    config = BertConfig.from_preset("tiny", vocab_size=50, max_position_embeddings=16,
                                    norm_position="pre", num_heads=4)
    model = BertForPreTraining(config)
    params = init_params(model, jax.random.key(3))
    # Non-trivial LayerNorm params, so a norm in the wrong place cannot pass.
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(a.size), a.shape),
                          params)
    input_ids = np.asarray(jax.random.randint(jax.random.key(1), (2, 12), 0, 50))
    input_mask = np.ones_like(input_ids)
    input_mask[1, 9:] = 0
    out = BertModel(config).apply({"params": params["bert"]}, jnp.asarray(input_ids),
                                  jnp.zeros_like(input_ids), jnp.asarray(input_mask))
    expected = _pre_ln_encoder(params, config, input_ids, input_mask)
    real = input_mask.astype(bool)
    np.testing.assert_allclose(np.asarray(out.sequence_output)[real], expected[real],
                               rtol=2e-4, atol=2e-4)


def test_post_layer_norm_is_the_default_and_has_no_final_norm():
    assert pretraining_config().model.norm_position == "post"
    params = init_params(BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=20)),
                         jax.random.key(0))
    assert "final_norm" not in params["bert"]
    # A model folder written before the key existed reads as post-LN.
    assert BertConfig.from_dict({"vocab_size": 20}).norm_position == "post"


def test_pre_layer_norm_pruned_last_layer_has_the_full_layers_loss_and_gradients():
    config = tiny_config(**{"model.norm_position": "pre"})
    model = BertForPreTraining(model_config(config))
    full = BertForPreTraining(model.config, prune_last_layer=False)
    params = init_params(model, jax.random.key(0))
    batch = random_batch(batch_size=4)
    batch["input_mask"][1, -5:] = 0
    ones = (jnp.float32(1.0), jnp.float32(1.0))
    results = [jax.grad(train.make_loss_fn(train.PretrainingTask(m, 1.0)), has_aux=True)(
        params, batch, None, ones) for m in (model, full)]
    (pruned_grads, pruned_sums), (full_grads, full_sums) = results
    for key in objectives.SUM_KEYS:
        np.testing.assert_allclose(pruned_sums[key], full_sums[key], rtol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(pruned_grads), jax.tree.leaves(full_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_norm_position_names_the_key():
    with pytest.raises(ValueError, match="config.model.norm_position"):
        BertConfig(norm_position="sandwich")


def _schedule(shape, **overrides):
    return learning_rate_schedule(OptimizerSettings.from_config(tiny_config(
        learning_rate=1e-3, warmup_steps=10, train_steps=110, lr_schedule=shape, **overrides)))


def test_linear_schedule_is_the_default_and_the_papers():
    assert pretraining_config().lr_schedule == "linear"
    default = learning_rate_schedule(OptimizerSettings.from_config(tiny_config(learning_rate=1e-3, warmup_steps=10, train_steps=110)))
    for step in (0, 5, 10, 60, 110):
        assert float(default(step)) == float(_schedule("linear")(step))


def test_cosine_schedule_warms_up_then_follows_half_a_cosine_to_zero():
    s = _schedule("cosine")
    assert float(s(5)) == pytest.approx(5e-4)
    assert float(s(10)) == pytest.approx(1e-3)
    for step in (35, 60, 85):
        assert float(s(step)) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * (step - 10) / 100)),
                                               rel=1e-5)
    assert float(s(110)) == pytest.approx(0.0, abs=1e-9)


def test_inverse_sqrt_schedule_decays_as_one_over_root_step():
    s = _schedule("inverse_sqrt")
    assert float(s(5)) == pytest.approx(5e-4)
    for step in (10, 50, 1000):
        assert float(s(step)) == pytest.approx(1e-3 * math.sqrt(10 / step), rel=1e-5)


def test_one_cycle_schedule_rises_and_falls_by_cosines():
    s = _schedule("one_cycle")
    assert float(s(0)) == pytest.approx(1e-3 / 25)
    assert float(s(10)) == pytest.approx(1e-3)
    low = 1e-3 / 25
    assert float(s(5)) == pytest.approx(low + (1e-3 - low) * 0.5, rel=1e-5)  # halfway up the cosine
    end = 1e-3 / 25 / 1e4
    assert float(s(60)) == pytest.approx(end + (1e-3 - end) * 0.5, rel=1e-4)  # halfway down
    assert float(s(110)) == pytest.approx(end, rel=1e-3)


def test_schedule_shape_is_validated_with_its_key():
    from bert.config import validate
    config = tiny_config(lr_schedule="triangle")
    with pytest.raises(ValueError, match="config.lr_schedule"):
        validate(config)


def test_sinusoidal_position_start_is_the_scaled_sine_table_and_stays_learned():
    config = model_config(tiny_config(**{"model.position_init": "sinusoidal"}))
    params = init_params(BertForPreTraining(config), jax.random.key(0))
    table = np.asarray(params["bert"]["embeddings"]["position_embeddings"]["embedding"])
    t, i = 5, 3  # row 5, the second frequency's sine (column 2) and cosine (column 3)
    frequency = 10000.0 ** (-2 / config.hidden_size)
    scale = config.initializer_range * math.sqrt(2)
    assert table[t, 2] == pytest.approx(scale * math.sin(t * frequency), rel=1e-5)
    assert table[t, i] == pytest.approx(scale * math.cos(t * frequency), rel=1e-5)
    # sin² + cos² = 1: the table's root mean square is exactly the normal start's spread.
    assert np.sqrt(np.mean(table ** 2)) == pytest.approx(config.initializer_range, rel=1e-4)
    normal = init_params(BertForPreTraining(model_config(tiny_config())), jax.random.key(0))
    assert jax.tree.structure(normal) == jax.tree.structure(params)  # same params, other start


def test_initializer_range_key_reaches_the_model():
    config = model_config(tiny_config(**{"model.initializer_range": 0.1}))
    params = init_params(BertForPreTraining(config), jax.random.key(0))
    kernel = np.asarray(params["bert"]["layer_0"]["mlp"]["intermediate"]["kernel"])
    assert config.initializer_range == 0.1
    assert kernel.std() == pytest.approx(0.1 * 0.88, rel=0.1)  # truncated at 2 std


def test_mimetic_attention_start_is_near_plus_and_minus_the_identity():
    config = model_config(tiny_config(**{"model.attention_init": "mimetic"}))
    params = init_params(BertForPreTraining(config), jax.random.key(0))
    from bert.model import MIMETIC_BETA_QK, MIMETIC_BETA_VO
    h, n, d = config.hidden_size, config.num_heads, config.head_size
    for i in range(config.num_layers):
        attention = jax.tree.map(np.asarray, params["bert"][f"layer_{i}"]["attention"])
        qkv, out = attention["qkv"]["kernel"], attention["out"]["kernel"]
        for head in range(n):
            # A rank-D fit of alpha·Z + beta·I: its trace keeps about D/H of beta·I's.
            qk = qkv[:, 0, head] @ qkv[:, 1, head].T  # (H, H)
            assert np.trace(qk) / h == pytest.approx(MIMETIC_BETA_QK * d / h, rel=0.35)
            assert np.allclose(qk, qk.T, atol=0.2)  # near-symmetric: q_i·k_j ≈ q_j·k_i
        vo = qkv[:, 2].reshape(h, h) @ out.reshape(h, h)  # full rank: the exact alpha·Z - beta·I
        assert np.mean(np.diag(vo)) == pytest.approx(-MIMETIC_BETA_VO, abs=0.1)
        assert abs(np.mean(vo - np.diag(np.diag(vo)))) < 0.01
    normal = init_params(BertForPreTraining(model_config(tiny_config())), jax.random.key(0))
    assert jax.tree.structure(normal) == jax.tree.structure(params)  # same params, other start
    assert jax.tree.map(jnp.shape, normal) == jax.tree.map(jnp.shape, params)


def test_attention_start_is_validated_with_its_key():
    with pytest.raises(ValueError, match="config.model.attention_init"):
        model_config(tiny_config(**{"model.attention_init": "identity"}))
