"""MLM and NSP losses and metrics.

Losses are returned as *sums* with separately supplied denominators. The denominators (the
number of real masked positions and of real sentence pairs) are properties of the whole global
batch, known before the forward pass, so micro-batches, data-parallel shards and a single big
batch all add up to exactly the same loss and gradient.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array

# Counters every step and eval reports; `finalize_metrics` turns them into means.
SUM_KEYS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count")


def batch_denominators(batch: Mapping[str, Array]) -> tuple[Array, Array]:
    """Number of real masked positions and of real NSP pairs in `batch`, at least 1 each."""
    mlm = jnp.maximum(jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)), 1.0)
    nsp = jnp.maximum(jnp.sum(batch["next_sentence_weights"].astype(jnp.float32)), 1.0)
    return mlm, nsp


def cross_entropy(logits: Array, labels: Array) -> tuple[Array, Array]:
    """Per-example negative log-likelihood and correctness of the argmax."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return nll, correct


def pretraining_sums(
    mlm_logits: Array, nsp_logits: Array, batch: Mapping[str, Array]
) -> dict[str, Array]:
    """Weighted sums of MLM and NSP loss and accuracy over this (micro-)batch.

    mlm_logits (B, P, V) at masked_lm_positions; nsp_logits (B, 2) with 0 = IsNext, or
    (B, K, 2) for packed rows, whose next_sentence_labels and next_sentence_weights are (B, K)
    (weight 0 on empty slots): every packed sequence then counts as one NSP example.
    """
    mlm_weights = batch["masked_lm_weights"].astype(jnp.float32)  # (B, P)
    mlm_nll, mlm_correct = cross_entropy(mlm_logits, batch["masked_lm_ids"])
    nsp_weights = batch["next_sentence_weights"].astype(jnp.float32)  # (B,) or (B, K)
    nsp_nll, nsp_correct = cross_entropy(nsp_logits, batch["next_sentence_labels"])
    return dict(
        mlm_loss_sum=jnp.sum(mlm_nll * mlm_weights),
        mlm_correct=jnp.sum(mlm_correct * mlm_weights),
        mlm_count=jnp.sum(mlm_weights),
        nsp_loss_sum=jnp.sum(nsp_nll * nsp_weights),
        nsp_correct=jnp.sum(nsp_correct * nsp_weights),
        nsp_count=jnp.sum(nsp_weights),
    )


def total_loss(
    sums: Mapping[str, Array], mlm_denominator: Array, nsp_denominator: Array, nsp_weight: float
) -> Array:
    """mlm + nsp_weight · nsp, each a mean over the global batch; nsp_weight 0 turns NSP off."""
    loss = sums["mlm_loss_sum"] / mlm_denominator
    if nsp_weight:
        loss = loss + nsp_weight * sums["nsp_loss_sum"] / nsp_denominator
    return loss


def finalize_metrics(sums: Mapping[str, Array | float], nsp_weight: float) -> dict[str, float]:
    """Means from accumulated counters (on host, after any cross-device sum)."""
    mlm_count = max(float(sums["mlm_count"]), 1.0)
    nsp_count = max(float(sums["nsp_count"]), 1.0)
    mlm_loss = float(sums["mlm_loss_sum"]) / mlm_count
    nsp_loss = float(sums["nsp_loss_sum"]) / nsp_count
    return dict(
        loss=mlm_loss + nsp_weight * nsp_loss,
        mlm_loss=mlm_loss,
        nsp_loss=nsp_loss,
        mlm_accuracy=float(sums["mlm_correct"]) / mlm_count,
        nsp_accuracy=float(sums["nsp_correct"]) / nsp_count,
    )


# ------------------------------------------------------------------ left-to-right language model

# Counters of the left-to-right (next-token) objective, the paper's "LTR & No NSP" (Table 5).
LTR_SUM_KEYS = ("ltr_loss_sum", "ltr_correct", "ltr_count")


def unmasked_input_ids(batch: Mapping[str, Array]) -> Array:
    """The batch's text before masking: (B, T) input_ids with every masked position's original
    token (masked_lm_ids) written back. Masking changes no other position, so this is exact; the
    LTR objective reads the same instances as MLM this way, unmasked."""
    input_ids = jnp.asarray(batch["input_ids"])  # (B, T)
    positions = jnp.asarray(batch["masked_lm_positions"])  # (B, P)
    shown = jnp.take_along_axis(input_ids, positions, axis=1)
    original = jnp.where(batch["masked_lm_weights"] > 0, batch["masked_lm_ids"], shown)
    rows = jnp.arange(input_ids.shape[0])[:, None]
    # Padding slots (weight 0) point at position 0 and write back what is there.
    return input_ids.at[rows, positions].set(original.astype(input_ids.dtype))


def next_token_weights(batch: Mapping[str, Array]) -> Array:
    """(B, T-1) float: 1 where position t+1 holds a real token of the same sequence as t, the
    targets of the next-token loss (never padding, never across packed sequences)."""
    real = batch["input_mask"][:, 1:].astype(bool)
    if "pack_ids" in batch:
        real &= batch["pack_ids"][:, 1:] == batch["pack_ids"][:, :-1]
    return real.astype(jnp.float32)


def ltr_denominator(batch: Mapping[str, Array]) -> Array:
    """Number of next-token targets in `batch`, at least 1."""
    return jnp.maximum(jnp.sum(next_token_weights(batch)), 1.0)


def ltr_sums(logits: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Weighted sums of the next-token loss and accuracy: logits (B, T-1, V) at positions
    0..T-2 predict the unmasked tokens at 1..T-1."""
    weights = next_token_weights(batch)  # (B, T-1)
    nll, correct = cross_entropy(logits, unmasked_input_ids(batch)[:, 1:])
    return dict(ltr_loss_sum=jnp.sum(nll * weights), ltr_correct=jnp.sum(correct * weights),
                ltr_count=jnp.sum(weights))


def finalize_ltr_metrics(sums: Mapping[str, Array | float]) -> dict[str, float]:
    count = max(float(sums["ltr_count"]), 1.0)
    loss = float(sums["ltr_loss_sum"]) / count
    return dict(loss=loss, ltr_loss=loss, ltr_accuracy=float(sums["ltr_correct"]) / count)
