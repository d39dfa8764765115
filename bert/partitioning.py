"""Where arrays live: the device Mesh, logical-axis rules, and the jit step wrapper.

Params carry logical axis names (see bert/model.py). One rules table maps them onto the mesh
axes `data`, `fsdp` and `tensor`, so switching between data parallel, FSDP and tensor parallel
is a change of `config.mesh`, not of code.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import ConfigDict

from bert import train
from bert.model import BertForPreTraining, dummy_inputs, logical_axes

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical param axis -> mesh axis. FSDP shards the embedding dimension of every weight; tensor
# parallelism splits attention heads and MLP columns (Megatron style) and the vocabulary.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("embed_out", None),
)


def make_mesh(mesh_config: ConfigDict, devices: list | None = None) -> Mesh:
    """A (data, fsdp, tensor) Mesh; one axis may be -1 to take the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"config.mesh: only one axis may be -1, got {', '.join(free)}")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if free:
        if len(devices) % fixed:
            raise ValueError(
                f"config.mesh.{free[0]}=-1: {len(devices)} devices are not divisible by the "
                f"other axes' product {fixed}"
            )
        sizes[free[0]] = len(devices) // fixed
    total = int(np.prod(list(sizes.values())))
    if total != len(devices):
        raise ValueError(
            f"config.mesh {sizes} needs {total} devices but {len(devices)} are available"
        )
    grid = np.asarray(devices).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(grid, MESH_AXES)


def param_shardings(model: nn.Module, mesh: Mesh, params_or_shapes: Any) -> Any:
    """NamedShardings for every param from its logical axes and LOGICAL_AXIS_RULES."""
    specs = nn.logical_to_mesh(logical_axes(model), LOGICAL_AXIS_RULES)
    return jax.tree.map(lambda spec, _: NamedSharding(mesh, spec), specs, params_or_shapes)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def state_shardings(model: BertForPreTraining, tx: optax.GradientTransformation,
                    mesh: Mesh) -> tuple[train.TrainState, train.TrainState]:
    """Shapes and NamedShardings of the whole train state, without allocating it.

    The optimizer is initialised on logically boxed params, so its moments inherit each param's
    logical axes (optimizer state follows its params); scalars such as step counts replicate.
    """

    def boxed_state() -> train.TrainState:
        params = model.init(jax.random.key(0), **dummy_inputs())["params"]
        return train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    boxed = jax.eval_shape(boxed_state)
    mesh_specs = nn.logical_to_mesh(nn.get_partition_spec(boxed), LOGICAL_AXIS_RULES)
    shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), mesh_specs,
                             is_leaf=lambda x: isinstance(x, P))
    return nn.meta.unbox(boxed), shardings


class Runner:
    """The jit-compiled train and eval steps over a Mesh, and placement of state and batches."""

    def __init__(self, config: ConfigDict, model: BertForPreTraining,
                 tx: optax.GradientTransformation) -> None:
        self.config = config
        self.model = model
        self.tx = tx
        self.mesh = make_mesh(config.mesh)
        self.batch_sharding = batch_sharding(self.mesh)
        shapes, self.state_shardings = state_shardings(model, tx, self.mesh)
        self.abstract_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            shapes, self.state_shardings,
        )
        step_fn = train.make_train_step(
            model, tx, nsp_weight=config.data.nsp_weight, grad_accum_steps=config.grad_accum_steps
        )
        replicated = NamedSharding(self.mesh, P())
        self._train_step = jax.jit(
            step_fn,
            in_shardings=(self.state_shardings, self.batch_sharding, replicated),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=(0,),
        )
        self._eval_step = jax.jit(
            train.make_eval_step(model),
            in_shardings=(self.state_shardings.params, self.batch_sharding),
            out_shardings=replicated,
        )
        self._init = jax.jit(
            lambda rng: train.create_train_state(model, tx, rng), out_shardings=self.state_shardings
        )

    def init_state(self, rng: jax.Array) -> train.TrainState:
        return self._init(rng)

    def place_batch(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's rows -> global arrays sharded over (data, fsdp)."""
        return {
            k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
            for k, v in host_batch.items()
        }

    def train_step(self, state: train.TrainState, host_batch: Mapping[str, np.ndarray],
                   base_rng: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
        return self._train_step(state, self.place_batch(host_batch), base_rng)

    def eval_step(self, params: Any, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        return self._eval_step(params, self.place_batch(host_batch))

    @property
    def num_batch_shards(self) -> int:
        return self.mesh.shape["data"] * self.mesh.shape["fsdp"]


def build_runner(config: ConfigDict, model: BertForPreTraining,
                 tx: optax.GradientTransformation) -> Runner:
    return Runner(config, model, tx)
