"""The fast building blocks compute exactly what the textbook versions do."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert import ops


@pytest.mark.parametrize("shape", [(8, 12, 16, 16), (3, 5), (1,)])
def test_threefry_bits_are_jax_random_bits(shape):
    key = jax.random.fold_in(jax.random.key(5), 3)
    np.testing.assert_array_equal(ops.threefry_bits(key, shape),
                                  jax.random.bits(key, shape, jnp.uint32))


def test_dropout_masks_are_flax_dropout_masks():
    x = jax.random.normal(jax.random.key(0), (4, 16, 32))
    rngs = {"dropout": jax.random.key(9)}

    class TwoDropouts(nn.Module):  # one module called twice draws two different masks
        dropout: type

        @nn.compact
        def __call__(self, x):
            dropout = self.dropout(0.1)
            return dropout(x, deterministic=False), dropout(x, deterministic=False)

    ours = TwoDropouts(ops.Dropout).apply({}, x, rngs=rngs)
    flax_ = TwoDropouts(nn.Dropout).apply({}, x, rngs=rngs)
    for a, b in zip(ours, flax_):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ours[0], ours[1])
    assert 0.08 < float(jnp.mean(ours[0] == 0)) < 0.12


def test_dense_dot_general_has_the_gradients_of_lax_dot_general():
    x = jax.random.normal(jax.random.key(0), (2, 8, 16))
    numbers = (((2,), (0,)), ((), ()))
    for kernel_shape in [(16, 48), (16, 3, 2, 4), (16, 4)]:  # wide, multi-axis and narrow outputs
        kernel = jax.random.normal(jax.random.key(1), kernel_shape)
        probe = jax.random.normal(jax.random.key(2), (2, 8, *kernel_shape[1:]))

        def loss(dot, x, kernel):
            return jnp.sum(dot(x, kernel, numbers) * probe)

        ours = jax.grad(lambda *a: loss(ops.dense_dot_general, *a), argnums=(0, 1))(x, kernel)
        plain = jax.grad(lambda *a: loss(jax.lax.dot_general, *a), argnums=(0, 1))(x, kernel)
        for a, b in zip(ours, plain):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        jaxpr = str(jax.make_jaxpr(lambda *a: ops.dense_dot_general(*a, numbers))(x, kernel))
        assert "bwd=_matmul_bwd" in jaxpr  # the CPU path was taken, not the fallback


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (2, 5, 24), (3, 7), (1,)])
def test_a_materialized_mask_is_the_mask(shape):
    mask = jax.random.bernoulli(jax.random.key(3), 0.9, shape)
    np.testing.assert_array_equal(jax.jit(ops.materialized)(mask), mask)


def test_gelu_is_exact_gelu_with_its_gradient():
    x = jnp.linspace(-12.0, 12.0, 4097)
    np.testing.assert_allclose(ops.gelu(x), jax.nn.gelu(x, approximate=False), rtol=0, atol=2e-6)
    grad = jax.vmap(jax.grad(ops.gelu))(x)
    reference = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
    np.testing.assert_allclose(grad, reference, rtol=0, atol=2e-6)
    assert ops.gelu(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
