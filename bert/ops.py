"""Building blocks of the encoder written for speed, each equal to the textbook version.

Profiling BERT-base training on XLA:CPU (docs/PERFORMANCE.md) showed places where the obvious
formulation wastes time; each replacement here computes the same values:

- `dense_dot_general`: the weight gradient of a dense layer, x^T·g, contracts over the rows of
  both operands. XLA:CPU's fast matmul kernels (YNNPACK) only take the contraction on the
  left operand's last axis, so autodiff's x^T·g fell back to a kernel at about half speed
  (2026-11-25). The custom backward pass materialises the transpose of the smaller operand
  first. Under jax 0.10.2 plain autodiff measures as fast (docs/PERFORMANCE.md); kept because
  it costs nothing and XLA's kernel choice for the transposed form has changed before.
- `gelu`: exact GELU written with erf, as BERT defines it; jax.nn.gelu's erfc form runs its
  forward and backward at half the speed on CPU, for the same values to float rounding.
- `Dropout`: on CPU, JAX lowers threefry as a rolled loop that streams every intermediate
  through memory; the unrolled hash here fuses into one pass. Masks are bit-for-bit those of
  `flax.linen.Dropout` (same key, same bits, same comparison).

Off the CPU, `dense_dot_general` is plain `lax.dot_general`: GPU and TPU matmuls take either
operand order at full speed.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# --------------------------------------------------------------------------------------------
# Dense layers


@jax.custom_vjp
def _matmul(x: Array, kernel: Array) -> Array:
    return x @ kernel  # (M, K) · (K, N)


def _matmul_fwd(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    return x @ kernel, (x, kernel)


def _matmul_bwd(residuals: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    x, kernel = residuals  # (M, K), (K, N); g (M, N)
    dx = jax.lax.dot_general(g, kernel, (((1,), (1,)), ((), ())))  # g · kernel^T: (M, K)
    # The barriers keep XLA from folding the transposes back into the dots.
    if x.shape[1] <= g.shape[1]:
        dkernel = jax.lax.optimization_barrier(x.T) @ g  # (K, M) · (M, N)
    else:
        dkernel_t = jax.lax.optimization_barrier(g.T) @ x  # (N, M) · (M, K)
        dkernel = jax.lax.optimization_barrier(dkernel_t).T
    return dx, dkernel


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense_dot_general(lhs: Array, rhs: Array, dimension_numbers: tuple, precision=None,
                      preferred_element_type=None) -> Array:
    """`lax.dot_general` for flax's Dense/DenseGeneral (`dot_general=` argument).

    A contraction of the trailing axes of `lhs` with the leading axes of `rhs` (every dense
    layer) runs as one (M, K)·(K, N) matmul with the CPU-friendly backward pass above; any other
    contraction, and every backend but the CPU, goes to `lax.dot_general` unchanged.
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    n = len(lhs_contract)
    is_dense = (
        not lhs_batch and not rhs_batch
        and tuple(lhs_contract) == tuple(range(lhs.ndim - n, lhs.ndim))
        and tuple(rhs_contract) == tuple(range(n))
    )
    if (not is_dense or precision is not None or preferred_element_type is not None
            or jax.default_backend() != "cpu"):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)
    rows_shape, features_shape = lhs.shape[: lhs.ndim - n], rhs.shape[n:]
    contracted = math.prod(rhs.shape[:n])
    out = _matmul(lhs.reshape(-1, contracted), rhs.reshape(contracted, -1))
    return out.reshape(*rows_shape, *features_shape)


# --------------------------------------------------------------------------------------------
# Activation


def gelu(x: Array) -> Array:
    """x·Φ(x) = x/2·(1 + erf(x/√2)), the exact (not tanh) GELU of BERT."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))  # weak scalars keep dtype


# --------------------------------------------------------------------------------------------
# Dropout

_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry_bits(key: Array, shape: tuple[int, ...]) -> Array:
    """`jax.random.bits(key, shape, jnp.uint32)` for a threefry key, bit for bit, unrolled.

    Element i is threefry2x32(key, (0, i)) with its two output words xor-ed, as JAX's
    partitionable threefry computes it (jax_threefry_partitionable, the default).
    """
    if math.prod(shape) >= 2**32:
        raise ValueError(f"threefry_bits: {shape} has 2**32 elements or more")
    k0, k1 = jax.random.key_data(key)
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]
    counter = sum(jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
                  for axis, stride in enumerate(strides))  # flat index; its high word is 0
    x0 = jnp.broadcast_to(ks[0], shape)
    x1 = counter + ks[1]
    for block in range(5):
        for r in _THREEFRY_ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = (x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))
            x1 = x0 ^ x1
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + jnp.uint32(block + 1)
    return x0 ^ x1


def bernoulli(key: Array, p: float, shape: tuple[int, ...]) -> Array:
    """`jax.random.bernoulli(key, p, shape)` with float32 p, bit for bit, via `threefry_bits`.

    Other key implementations, or JAX's non-partitionable threefry, use jax.random itself.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # a raw uint32[2] key
        key = jax.random.wrap_key_data(key)
    fast = (str(jax.random.key_impl(key)) == "threefry2x32"
            and jax.config.jax_threefry_partitionable)
    if not fast:
        return jax.random.bernoulli(key, p, shape)
    bits = threefry_bits(key, shape)
    # jax.random.uniform: 23 random mantissa bits under exponent 0 give [1, 2), minus 1.
    one_to_two = jax.lax.bitcast_convert_type((bits >> jnp.uint32(9)) | jnp.uint32(0x3F800000),
                                              jnp.float32)
    return (one_to_two - 1.0) < jnp.float32(p)


def materialized(mask: Array) -> Array:
    """`mask`, computed once into memory (1 bit an element) rather than wherever it is read.

    XLA fuses an elementwise computation into each of its consumers; the threefry hash behind a
    dropout mask has several (the forward select and 2-3 fusions of the backward pass), so every
    mask was hashed 3-4 times per step. A reduction is never duplicated that way, so the mask is
    packed 8 to a byte by one, and unpacked (two cheap integer ops) where it is read.
    """
    if mask.shape[-1] % 8:
        return mask
    shifts = jnp.arange(8, dtype=jnp.uint8)
    grouped = mask.reshape(*mask.shape[:-1], -1, 8).astype(jnp.uint8)
    packed = jnp.sum(grouped << shifts, axis=-1, dtype=jnp.uint8)  # distinct bits: sum = or
    return ((packed[..., None] >> shifts) & jnp.uint8(1)).astype(bool).reshape(mask.shape)


class Dropout(nn.Module):
    """`flax.linen.Dropout` (same "dropout" rng stream, same masks) with the fast mask above."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep_prob = 1.0 - self.rate
        keep = materialized(bernoulli(self.make_rng("dropout"), keep_prob, x.shape))
        return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))
