"""Train state, the one loss function, and the step that every parallel wrapper shares.

`make_train_step` returns a pure function (state, batch, rng) -> (state, sums). The jit-over-a-Mesh
and pmap wrappers in `bert.partitioning` only decide where arrays live and how cross-device
sums are taken (`axis_name`), so the two cannot drift apart.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert import objectives
from bert.model import BertForPreTraining, init_params

Array = jax.Array
Batch = Mapping[str, Array]
StepFn = Callable[["TrainState", Batch, Array], tuple["TrainState", dict[str, Array]]]

# Batch fields the model consumes; anything else in a batch is ignored by the step.
MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")
# ... and those of packed batches (bert/data/packing.py), passed only when present.
PACKED_INPUTS = ("position_ids", "pack_ids", "nsp_positions")


@flax.struct.dataclass
class TrainState:
    step: Array  # int32 scalar: number of optimizer steps taken (skipped non-finite ones included)
    params: Any
    opt_state: Any


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: Array) -> TrainState:
    params = init_params(model, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def step_rng(base_rng: Array, step: Array) -> Array:
    """The dropout key of one step: a function of (seed, step) only, so resumes replay exactly."""
    return jax.random.fold_in(base_rng, step)


def make_loss_fn(model: BertForPreTraining, nsp_weight: float) -> Callable:
    """loss_fn(params, batch, rng, mlm_denominator, nsp_denominator) -> (loss, sums).

    rng None means deterministic (no dropout), as in evaluation.
    """

    def loss_fn(
        params: Any, batch: Batch, rng: Array | None, mlm_denominator: Array, nsp_denominator: Array
    ) -> tuple[Array, dict[str, Array]]:
        inputs = {k: batch[k] for k in MODEL_INPUTS}
        inputs.update({k: batch[k] for k in PACKED_INPUTS if k in batch})
        rngs = None if rng is None else {"dropout": rng}
        mlm_logits, nsp_logits = model.apply(
            {"params": params}, **inputs, deterministic=rng is None, rngs=rngs
        )
        sums = objectives.pretraining_sums(mlm_logits, nsp_logits, batch)
        loss = objectives.total_loss(sums, mlm_denominator, nsp_denominator, nsp_weight)
        return loss, sums

    return loss_fn


def _split_micro_batches(batch: Batch, num_micro: int) -> dict[str, Array]:
    """(B, ...) -> (num_micro, B / num_micro, ...); micro-batch k is rows k, k + num_micro, ...

    Strided, not contiguous: a batch sharded over devices in contiguous blocks then gives every
    micro-batch the same rows from every device, so nothing moves between devices. Which rows
    share a micro-batch does not change the sums.
    """

    def split(x: Array) -> Array:
        if x.shape[0] % num_micro:
            raise ValueError(
                f"batch of {x.shape[0]} rows is not divisible by config.grad_accum_steps={num_micro}"
            )
        return x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

    return {k: split(v) for k, v in batch.items()}


def make_train_step(
    model: BertForPreTraining,
    tx: optax.GradientTransformation,
    *,
    nsp_weight: float,
    grad_accum_steps: int = 1,
    axis_name: str | None = None,
) -> StepFn:
    """One optimizer step over a (local) batch, accumulated over `grad_accum_steps` micro-batches.

    With `axis_name` (pmap) denominators, gradients and metric sums are summed across devices,
    which makes a data-parallel step equal to the same step on the global batch. A non-finite
    loss or gradient leaves params and optimizer state unchanged (the step counter still moves)
    and is reported as `nonfinite` = 1; the training loop decides whether to go on or stop.
    """
    loss_fn = make_loss_fn(model, nsp_weight)
    tx = optax.with_extra_args_support(tx)  # update(..., global_norm=) below; a no-op for ours
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def cross_device_sum(tree: Any) -> Any:
        return tree if axis_name is None else jax.lax.psum(tree, axis_name)

    def train_step(state: TrainState, batch: Batch, base_rng: Array) -> tuple[TrainState, dict]:
        rng = step_rng(base_rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        mlm_denominator, nsp_denominator = cross_device_sum(objectives.batch_denominators(batch))

        def micro_step(carry: tuple[Any, dict], micro: tuple[Array, Batch]) -> tuple:
            grads_acc, sums_acc = carry
            index, micro_batch = micro
            (_, sums), grads = grad_fn(
                state.params,
                micro_batch,
                jax.random.fold_in(rng, index),
                mlm_denominator,
                nsp_denominator,
            )
            return (jax.tree.map(jnp.add, grads_acc, grads), jax.tree.map(jnp.add, sums_acc, sums)), None

        zero_grads = jax.tree.map(jnp.zeros_like, state.params)
        zero_sums = {k: jnp.zeros((), jnp.float32) for k in objectives.SUM_KEYS}
        if grad_accum_steps == 1:
            (grads, sums), _ = micro_step((zero_grads, zero_sums), (jnp.int32(0), batch))
        else:
            micro_batches = _split_micro_batches(batch, grad_accum_steps)
            (grads, sums), _ = jax.lax.scan(
                micro_step,
                (zero_grads, zero_sums),
                (jnp.arange(grad_accum_steps), micro_batches),
            )
        grads, sums = cross_device_sum((grads, sums))

        # A NaN or infinity in any gradient makes the global norm non-finite: one reduction.
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums["mlm_loss_sum"]) & jnp.isfinite(
            sums["nsp_loss_sum"]
        )

        def update(params: Any, opt_state: Any) -> tuple[Any, Any]:
            updates, opt_state = tx.update(grads, opt_state, params, global_norm=grad_norm)
            return optax.apply_updates(params, updates), opt_state

        # A cond rather than a select over the new and old trees: the skip branch costs nothing
        # and the update happens in place in the donated buffers.
        new_params, new_opt_state = jax.lax.cond(
            finite, update, lambda params, opt_state: (params, opt_state),
            state.params, state.opt_state,
        )
        new_state = TrainState(step=state.step + 1, params=new_params, opt_state=new_opt_state)
        sums = dict(sums, grad_norm=grad_norm, nonfinite=1.0 - finite.astype(jnp.float32))
        return new_state, sums

    return train_step


def make_eval_step(model: BertForPreTraining, *, axis_name: str | None = None) -> Callable:
    """eval_step(params, batch) -> metric sums, deterministic (no dropout)."""
    loss_fn = make_loss_fn(model, nsp_weight=0.0)

    def eval_step(params: Any, batch: Batch) -> dict[str, Array]:
        _, sums = loss_fn(params, batch, None, jnp.float32(1.0), jnp.float32(1.0))
        return sums if axis_name is None else jax.lax.psum(sums, axis_name)

    return eval_step
