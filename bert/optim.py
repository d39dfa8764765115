"""Optimizers as in the paper: AdamW (or LAMB), warmup then linear decay, global-norm clipping.

Weight decay skips LayerNorm params and every bias, as the original implementation does.
"""
from __future__ import annotations

from typing import Any

import jax
import optax
from ml_collections import ConfigDict


def learning_rate_schedule(config: ConfigDict) -> optax.Schedule:
    """Linear warmup to `learning_rate` over `warmup_steps`, then linear decay to 0.

    The decay ends at `schedule_steps`, or at `train_steps` when that is 0.
    """
    peak = float(config.learning_rate)
    warmup = int(config.warmup_steps)
    total = int(config.schedule_steps or config.train_steps)
    if warmup > total:
        raise ValueError(f"config.warmup_steps={warmup} exceeds the schedule's {total} steps")
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warmup, 1)),
            optax.linear_schedule(peak, 0.0, max(total - warmup, 1)),
        ],
        boundaries=[warmup],
    )


def decay_mask(params: Any) -> Any:
    """True for params that take weight decay: every kernel and embedding, no bias or LayerNorm."""

    def takes_decay(path: tuple, _: Any) -> bool:
        # Only dict keys name params; boxed (logically partitioned) leaves add an attribute key.
        names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        leaf = names[-1]
        in_norm = any("norm" in n for n in names)
        return leaf in ("kernel", "embedding") and not in_norm

    return jax.tree_util.tree_map_with_path(takes_decay, params)


def make_optimizer(config: ConfigDict) -> optax.GradientTransformation:
    """The optimizer named by `config.optim.name` ("adamw" or "lamb")."""
    optim = config.optim
    schedule = learning_rate_schedule(config)
    factories = {"adamw": optax.adamw, "lamb": optax.lamb}
    if optim.name not in factories:
        raise ValueError(f"config.optim.name must be adamw or lamb, got {optim.name!r}")
    update = factories[optim.name](
        schedule,
        b1=optim.b1,
        b2=optim.b2,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        mask=decay_mask,
    )
    if optim.clip_norm:
        return optax.chain(optax.clip_by_global_norm(optim.clip_norm), update)
    return update
