"""Optimizers as in the paper: AdamW (or LAMB), warmup then linear decay, global-norm clipping.

Weight decay skips LayerNorm params and every bias, as the original implementation does.
The optimizer state is optax's own (`optax.chain(clip_by_global_norm, adamw)`), so checkpoints
written by any version of this module restore into any other.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

SCHEDULES = ("linear", "one_cycle", "cosine", "inverse_sqrt")
OPTIMIZERS = ("adamw", "lamb")


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """What the optimizer and its learning-rate schedule are made of; bert/config.py says what
    each config key means. Pretraining reads them from its config (`from_config`), fine-tuning
    from its recipe (bert.finetune.optimizer_settings)."""

    learning_rate: float  # peak, reached after warmup
    total_steps: int  # the schedule's horizon: every decay ends here
    warmup_steps: int  # at most total_steps
    lr_schedule: str = "linear"  # one of SCHEDULES
    name: str = "adamw"  # one of OPTIMIZERS
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.01  # not on LayerNorm params and biases
    clip_norm: float = 1.0  # global gradient-norm clip; 0 disables

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"config.lr_schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if self.name not in OPTIMIZERS:
            raise ValueError(f"config.optim.name must be adamw or lamb, got {self.name!r}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be between 0 and the "
                             f"schedule's {self.total_steps} steps")

    @classmethod
    def from_config(cls, config: ConfigDict) -> "OptimizerSettings":
        """Of a pretraining config: the schedule ends at config.schedule_steps, or at
        config.train_steps when that is 0. A warmup longer than the schedule (a short run with
        only train_steps lowered) is no error: it is cut to the schedule, with a warning."""
        total = int(config.schedule_steps or config.train_steps)
        warmup = int(config.warmup_steps)
        if warmup > total:
            horizon = (f"config.schedule_steps={total}" if config.schedule_steps
                       else f"config.train_steps={total}")
            logging.warning("config.warmup_steps=%d is longer than the learning-rate schedule "
                            "(%s): warming up over all %d steps instead", warmup, horizon, total)
            warmup = total
        optim = config.optim
        return cls(learning_rate=float(config.learning_rate), total_steps=total,
                   warmup_steps=warmup, lr_schedule=config.get("lr_schedule", "linear"),
                   name=optim.name, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                   weight_decay=optim.weight_decay, clip_norm=optim.clip_norm)


def learning_rate_schedule(settings: OptimizerSettings) -> optax.Schedule:
    """The learning rate at each step, by `settings.lr_schedule`:

    - linear: linear warmup from 0 to `learning_rate` over `warmup_steps`, then linear decay to 0
      (the paper's); with warmup_steps half the schedule it is the triangular schedule.
    - one_cycle: Smith's one-cycle: a cosine rise from learning_rate / 25 to the peak at
      `warmup_steps`, then a cosine fall to learning_rate / 2.5e5 (optax.cosine_onecycle_schedule).
    - cosine: linear warmup, then a half cosine down to 0.
    - inverse_sqrt: linear warmup, then learning_rate · sqrt(warmup_steps / step) (no end).

    Every decay ends at `total_steps`.
    """
    peak = float(settings.learning_rate)
    warmup, total = settings.warmup_steps, settings.total_steps
    if settings.lr_schedule == "one_cycle":
        return optax.cosine_onecycle_schedule(
            max(total, 1), peak, pct_start=min(max(warmup, 1) / max(total, 1), 1.0))
    ramp = optax.linear_schedule(0.0, peak, max(warmup, 1))
    if settings.lr_schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total - warmup, 1))
    elif settings.lr_schedule == "inverse_sqrt":
        def decay(count: jax.Array) -> jax.Array:
            return peak * jnp.sqrt(max(warmup, 1) / (count + max(warmup, 1)))
    else:
        decay = optax.linear_schedule(peak, 0.0, max(total - warmup, 1))
    return optax.join_schedules([ramp, decay], boundaries=[warmup])


def decay_mask(params: Any) -> Any:
    """True for params that take weight decay: every kernel and embedding, no bias or LayerNorm."""

    def takes_decay(path: tuple, _: Any) -> bool:
        # Only dict keys name params; boxed (logically partitioned) leaves add an attribute key.
        names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        leaf = names[-1]
        in_norm = any("norm" in n for n in names)
        return leaf in ("kernel", "embedding") and not in_norm

    return jax.tree_util.tree_map_with_path(takes_decay, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """`optax.clip_by_global_norm` that takes the norm from the caller when it has one.

    The train step already reduces the gradients to their global norm (its non-finite check), so
    `update(grads, state, params, global_norm=norm)` skips a second pass over 440 MB of BERT-base
    gradients. The scale is one scalar multiply (1 below the threshold, so those steps are
    exact) instead of optax's divide, which XLA treats as expensive and so writes the clipped
    gradients out before the Adam moments read them; a multiply fuses into each reader.
    Same empty state as optax's.
    """

    def update(updates: Any, state: optax.EmptyState, params: Any = None, *,
               global_norm: jax.Array | None = None, **extra: Any) -> tuple[Any, optax.EmptyState]:
        del params, extra
        norm = optax.tree.norm(updates) if global_norm is None else global_norm
        scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


def make_optimizer(settings: OptimizerSettings,
                   clip: Callable[[float], Any] = clip_by_global_norm
                   ) -> optax.GradientTransformationExtraArgs:
    """The optimizer `settings.name` names ("adamw" or "lamb") on its learning-rate schedule.

    `update` accepts `global_norm=` (the gradients' global norm, when the caller has it).
    `clip` builds the clipping transformation (the benchmark swaps in optax's to measure ours).
    """
    factories = {"adamw": optax.adamw, "lamb": optax.lamb}
    update = factories[settings.name](
        learning_rate_schedule(settings),
        b1=settings.b1,
        b2=settings.b2,
        eps=settings.eps,
        weight_decay=settings.weight_decay,
        mask=decay_mask,
    )
    if settings.clip_norm:
        return optax.chain(clip(settings.clip_norm), update)
    return optax.with_extra_args_support(update)
