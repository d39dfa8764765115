"""Tasks, train state, and the one step that every parallel wrapper and every task shares.

A `Task` is a model plus its objective: how a batch feeds the model, which weighted sums its
loss is made of, and which normalisers come from the whole global batch. Pretraining (MLM +
NSP) is one task; each fine-tuning family in bert/tasks is another. `make_train_step(task, tx)`
returns a pure function (state, batch, rng) -> (state, sums). The jit-over-a-Mesh and pmap
wrappers in `bert.partitioning` only decide where arrays live and how cross-device sums are
taken (`axis_name`), so the two cannot drift apart, and no task has a loop of its own.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert import objectives
from bert.model import BertForPreTraining, dummy_inputs

Array = jax.Array
Batch = Mapping[str, Array]
StepFn = Callable[["TrainState", Batch, Array], tuple["TrainState", dict[str, Array]]]

# Batch fields the pretraining model consumes; anything else in a batch is ignored by the step.
MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")
# ... and those of packed batches (bert/data/packing.py), passed only when present.
PACKED_INPUTS = ("position_ids", "pack_ids", "nsp_positions")


class Task:
    """A model and its objective, as the step, the runners and the training loop see it.

    The loss is `loss(sums, denominators)`: `sums` are weighted sums over the rows at hand (a
    micro-batch, one device's shard) and `denominators` are normalisers of the whole global
    batch, known before the forward pass. So micro-batches, data-parallel shards and one big
    batch add up to exactly the same loss and gradient.
    """

    model: nn.Module
    sum_keys: tuple[str, ...]  # the keys `sums` returns, zero-initialised by the step
    model_input_keys: tuple[str, ...]  # batch fields passed to the model, when present

    def init_inputs(self) -> dict[str, Array]:
        """Shape-only inputs for `model.init`."""
        raise NotImplementedError

    def apply(self, params: Any, batch: Batch, rng: Array | None) -> Any:
        """The model's outputs; rng None means deterministic (no dropout)."""
        inputs = {k: batch[k] for k in self.model_input_keys if k in batch}
        rngs = None if rng is None else {"dropout": rng}
        return self.model.apply({"params": params}, **inputs, deterministic=rng is None,
                                rngs=rngs)

    def sums(self, outputs: Any, batch: Batch) -> dict[str, Array]:
        raise NotImplementedError

    def denominators(self, batch: Batch) -> Any:
        """A pytree of normalisers of this batch; the step sums it over devices."""
        raise NotImplementedError

    def loss(self, sums: Mapping[str, Array], denominators: Any) -> Array:
        raise NotImplementedError

    def predictions(self, outputs: Any, batch: Batch) -> dict[str, Array]:
        """Per-row outputs an evaluation brings back to the host (logits, scores)."""
        return {}

    def finalize(self, sums: Mapping[str, float]) -> dict[str, float]:
        """Host-side means of accumulated sums, for the metrics log."""
        raise NotImplementedError


class PretrainingTask(Task):
    """MLM (on the gathered masked positions) + nsp_weight · NSP."""

    sum_keys = objectives.SUM_KEYS
    model_input_keys = MODEL_INPUTS + PACKED_INPUTS

    def __init__(self, model: BertForPreTraining, nsp_weight: float) -> None:
        self.model = model
        self.nsp_weight = float(nsp_weight)

    def init_inputs(self) -> dict[str, Array]:
        return dummy_inputs()

    def sums(self, outputs: Any, batch: Batch) -> dict[str, Array]:
        mlm_logits, nsp_logits = outputs
        return objectives.pretraining_sums(mlm_logits, nsp_logits, batch)

    def denominators(self, batch: Batch) -> tuple[Array, Array]:
        return objectives.batch_denominators(batch)

    def loss(self, sums: Mapping[str, Array], denominators: Any) -> Array:
        mlm_denominator, nsp_denominator = denominators
        return objectives.total_loss(sums, mlm_denominator, nsp_denominator, self.nsp_weight)

    def finalize(self, sums: Mapping[str, float]) -> dict[str, float]:
        return objectives.finalize_metrics(sums, self.nsp_weight)


class LeftToRightTask(Task):
    """Next-token prediction over the real tokens of unmasked instances, no NSP: the paper's
    "LTR & No NSP" (Table 5). The model must have causal attention (BertConfig.causal), or a
    token would see the one it predicts. It reads the MLM batches, undoing their masks, and
    runs the MLM head (the same params) at every position but the last."""

    sum_keys = objectives.LTR_SUM_KEYS
    model_input_keys = MODEL_INPUTS + PACKED_INPUTS

    def __init__(self, model: BertForPreTraining) -> None:
        if not model.config.causal:
            raise ValueError("the left-to-right objective needs a causal model (BertConfig.causal)")
        self.model = model

    def init_inputs(self) -> dict[str, Array]:
        return dummy_inputs()

    def apply(self, params: Any, batch: Batch, rng: Array | None) -> Any:
        input_ids = objectives.unmasked_input_ids(batch)  # (B, T)
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1] - 1),
                                     (input_ids.shape[0], input_ids.shape[1] - 1))
        return super().apply(params, {**batch, "input_ids": input_ids,
                                      "masked_lm_positions": positions}, rng)

    def sums(self, outputs: Any, batch: Batch) -> dict[str, Array]:
        logits, _ = outputs  # (B, T-1, V); the NSP logits are unused
        return objectives.ltr_sums(logits, batch)

    def denominators(self, batch: Batch) -> Array:
        return objectives.ltr_denominator(batch)

    def loss(self, sums: Mapping[str, Array], denominators: Any) -> Array:
        return sums["ltr_loss_sum"] / denominators

    def finalize(self, sums: Mapping[str, float]) -> dict[str, float]:
        return objectives.finalize_ltr_metrics(sums)


@flax.struct.dataclass
class TrainState:
    step: Array  # int32 scalar: number of optimizer steps taken (skipped non-finite ones included)
    params: Any
    opt_state: Any


def init_task_params(task: Task, rng: Array) -> Any:
    """Fresh params as a plain pytree (logical-axis boxes removed)."""
    return nn.meta.unbox(task.model.init(rng, **task.init_inputs())["params"])


def create_train_state(task: Task, tx: optax.GradientTransformation, rng: Array,
                       params: Any = None) -> TrainState:
    """A step-0 state: fresh params, or `params` (e.g. a pretrained encoder with new heads)."""
    if params is None:
        params = init_task_params(task, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def step_rng(base_rng: Array, step: Array) -> Array:
    """The dropout key of one step: a function of (seed, step) only, so resumes replay exactly."""
    return jax.random.fold_in(base_rng, step)


def make_loss_fn(task: Task) -> Callable:
    """loss_fn(params, batch, rng, denominators) -> (loss, sums); rng None: no dropout."""

    def loss_fn(params: Any, batch: Batch, rng: Array | None,
                denominators: Any) -> tuple[Array, dict[str, Array]]:
        sums = task.sums(task.apply(params, batch, rng), batch)
        return task.loss(sums, denominators), sums

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
    task: Task,
    tx: optax.GradientTransformation,
    *,
    grad_accum_steps: int = 1,
    axis_name: str | None = None,
) -> StepFn:
    """One optimizer step over a (local) batch, accumulated over `grad_accum_steps` micro-batches.

    With `axis_name` (pmap) denominators, gradients and metric sums are summed across devices,
    which makes a data-parallel step equal to the same step on the global batch. A non-finite
    loss or gradient leaves params and optimizer state unchanged (the step counter still moves)
    and is reported as `nonfinite` = 1; the training loop decides whether to go on or stop.
    """
    loss_fn = make_loss_fn(task)
    tx = optax.with_extra_args_support(tx)  # update(..., global_norm=) below; a no-op for ours
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def cross_device_sum(tree: Any) -> Any:
        return tree if axis_name is None else jax.lax.psum(tree, axis_name)

    def train_step(state: TrainState, batch: Batch, base_rng: Array) -> tuple[TrainState, dict]:
        rng = step_rng(base_rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        denominators = cross_device_sum(task.denominators(batch))

        def micro_step(carry: tuple[Any, dict], micro: tuple[Array, Batch]) -> tuple:
            grads_acc, sums_acc = carry
            index, micro_batch = micro
            (_, sums), grads = grad_fn(
                state.params,
                micro_batch,
                jax.random.fold_in(rng, index),
                denominators,
            )
            return (jax.tree.map(jnp.add, grads_acc, grads), jax.tree.map(jnp.add, sums_acc, sums)), None

        zero_grads = jax.tree.map(jnp.zeros_like, state.params)
        zero_sums = {k: jnp.zeros((), jnp.float32) for k in task.sum_keys}
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
        finite = jnp.isfinite(grad_norm)
        for value in sums.values():
            finite &= jnp.isfinite(value)

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


def make_eval_step(task: Task, *, axis_name: str | None = None) -> Callable:
    """eval_step(params, batch) -> (metric sums, per-row predictions), deterministic.

    Under pmap (`axis_name`) sums are summed and predictions gathered across devices, so every
    host gets the predictions of the whole global batch.
    """

    def eval_step(params: Any, batch: Batch) -> tuple[dict[str, Array], dict[str, Array]]:
        outputs = task.apply(params, batch, None)
        sums, predictions = task.sums(outputs, batch), task.predictions(outputs, batch)
        if axis_name is None:
            return sums, predictions
        return (jax.lax.psum(sums, axis_name),
                jax.lax.all_gather(predictions, axis_name, tiled=True))

    return eval_step
