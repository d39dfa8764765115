"""Where arrays live: the device Mesh, logical-axis rules, batch layout, and the two step wrappers.

Params carry logical axis names (see bert/model.py). One rules table maps them onto the mesh
axes `data`, `fsdp` and `tensor`, so switching between data parallel, FSDP and tensor parallel
is a change of `config.mesh`, not of code. `config.parallelism = "pmap"` instead replicates the
params on every device and sums across devices inside the shared step (`axis_name`).

Both runners hold the train state in the same form (unreplicated shapes, global arrays), so a
checkpoint written by one restores into the other, and `bert.pretrain` never needs to know which
runner it drives.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import ConfigDict

from bert import train

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
PMAP_AXIS = "devices"

# Logical param axis -> mesh axis. FSDP shards the embedding dimension of every weight (and with
# it the optimizer moments); tensor parallelism splits attention heads, MLP columns and the
# vocabulary (Megatron style). A mesh axis is used at most once per param; a dimension the mesh
# axis does not divide is replicated instead (see `mesh_spec`).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("embed_out", None),
)

# --------------------------------------------------------------------------------------------
# Mesh


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Axis sizes of config.mesh with its one -1 resolved to the remaining devices."""
    sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ValueError(f"config.mesh.{axis}={size}: use a positive size or -1")
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"config.mesh: only one axis may be -1, got {', '.join(free)}")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"config.mesh.{free[0]}=-1: {num_devices} devices are not divisible by the "
                f"other axes' product {fixed}"
            )
        sizes[free[0]] = num_devices // fixed
    total = int(np.prod(list(sizes.values())))
    if total != num_devices:
        raise ValueError(f"config.mesh {sizes} needs {total} devices but {num_devices} are available")
    return sizes


def _by_process(devices: Sequence[jax.Device]) -> list[jax.Device]:
    """Devices of one process next to each other, so each host holds one block of the batch."""
    return sorted(devices, key=lambda d: (d.process_index, d.id))


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) Mesh; one axis may be -1 to take the remaining devices.

    Devices are laid out process by process with `tensor` innermost, so tensor-parallel groups
    stay inside a host (its fast interconnect) and `data` spans hosts.
    """
    devices = _by_process(devices if devices is not None else jax.devices())
    sizes = mesh_shape(mesh_config, len(devices))
    grid = np.asarray(devices, dtype=object).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(grid, MESH_AXES)


# --------------------------------------------------------------------------------------------
# Param and state shardings


def mesh_spec(logical: P, shape: Sequence[int], axis_sizes: Mapping[str, int],
              name: str = "") -> tuple[P, list[str]]:
    """Map one param's logical PartitionSpec onto mesh axes with LOGICAL_AXIS_RULES.

    Returns the mesh PartitionSpec and a note for every dimension left replicated because its
    mesh axis does not divide it (e.g. BERT's 30522-word vocabulary under tensor=4): jit cannot
    place an uneven shard, and replicating one table costs memory, not correctness.
    """
    rules = dict(LOGICAL_AXIS_RULES)
    used: set[str] = set()
    spec: list[str | None] = []
    notes: list[str] = []
    for logical_axis, dim in zip(tuple(logical) + (None,) * (len(shape) - len(logical)), shape):
        if logical_axis is None:
            spec.append(None)
            continue
        if logical_axis not in rules:
            raise ValueError(f"param {name}: logical axis {logical_axis!r} has no rule in "
                             f"LOGICAL_AXIS_RULES")
        mesh_axis = rules[logical_axis]
        if mesh_axis is None or mesh_axis in used:
            spec.append(None)
            continue
        if dim % axis_sizes[mesh_axis]:
            notes.append(f"{name}: config.mesh.{mesh_axis}={axis_sizes[mesh_axis]} does not "
                         f"divide its {logical_axis} dimension of {dim}; that dimension is "
                         f"replicated")
            spec.append(None)
            continue
        used.add(mesh_axis)
        spec.append(mesh_axis)
    return P(*spec), notes


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def state_shardings(task: train.Task, tx: optax.GradientTransformation,
                    mesh: Mesh) -> tuple[train.TrainState, train.TrainState, list[str]]:
    """Shapes and NamedShardings of the whole train state, without allocating it.

    The optimizer is initialised on logically boxed params, so its moments inherit each param's
    logical axes (optimizer state follows its params); scalars such as step counts replicate.
    Also returns the notes of dimensions replicated because the mesh does not divide them.
    """

    def boxed_state() -> train.TrainState:
        params = task.model.init(jax.random.key(0), **task.init_inputs())["params"]
        return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                opt_state=tx.init(params))

    boxed = jax.eval_shape(boxed_state)
    logical = nn.get_partition_spec(boxed)
    shapes = nn.meta.unbox(boxed)
    notes: list[str] = []

    def to_sharding(path: tuple, spec: P, shape: jax.ShapeDtypeStruct) -> NamedSharding:
        name = _path_name(path)
        spec, spec_notes = mesh_spec(spec, shape.shape, mesh.shape, name)
        if name.startswith("params/"):  # moments repeat their param's note
            notes.extend(spec_notes)
        return NamedSharding(mesh, spec)

    shardings = jax.tree_util.tree_map_with_path(
        to_sharding, logical, shapes, is_leaf=lambda x: isinstance(x, P))
    return shapes, shardings, notes


def _without_fsdp(sharding: NamedSharding) -> NamedSharding:
    return NamedSharding(sharding.mesh, P(*(None if a == "fsdp" else a for a in sharding.spec)))


def _gathering_params(step_fn: Callable, param_shardings: Any) -> Callable:
    """`step_fn` computing with params all-gathered over `fsdp` (still split over `tensor`).

    FSDP keeps params and optimizer state sharded between steps; inside the step each device
    needs whole weights for its own rows of the batch. Saying so up front keeps XLA from
    following the weights' sharding into the activations (splitting them by hidden unit and
    replicating the batch), which costs far more memory than the gathered weights.
    """
    gathered = jax.tree.map(_without_fsdp, param_shardings)

    def step(state: train.TrainState, *args: Any) -> Any:
        params = jax.lax.with_sharding_constraint(state.params, gathered)
        return step_fn(state.replace(params=params), *args)

    return step


def _abstract(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


# --------------------------------------------------------------------------------------------
# Global batch semantics


@dataclasses.dataclass(frozen=True)
class ParallelSettings:
    """What a runner reads of a config: the GLOBAL batch, its micro-batches, and where arrays
    live (bert/config.py documents each key)."""

    batch_size: int  # GLOBAL rows per optimizer step
    grad_accum_steps: int = 1  # micro-batches per step
    parallelism: str = "jit"  # "jit" over a Mesh, or "pmap"
    mesh: Mapping[str, int] = dataclasses.field(  # axis sizes; one may be -1
        default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1})

    @classmethod
    def from_config(cls, config: ConfigDict) -> "ParallelSettings":
        return cls(batch_size=int(config.batch_size),
                   grad_accum_steps=int(config.grad_accum_steps),
                   parallelism=str(config.parallelism),
                   mesh={axis: int(config.mesh[axis]) for axis in MESH_AXES})


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """How the GLOBAL `config.batch_size` splits over hosts, batch shards and micro-batches.

    A batch shard is a group of devices holding the same rows: one (data, fsdp) position of the
    Mesh (tensor-parallel peers share rows), or one device under pmap.
    """

    global_size: int
    num_shards: int
    grad_accum_steps: int
    process_count: int

    @property
    def per_shard(self) -> int:
        return self.global_size // self.num_shards

    @property
    def per_host(self) -> int:
        return self.global_size // self.process_count



def batch_layout(settings: ParallelSettings, num_shards: int, shards_description: str,
                 process_count: int) -> BatchLayout:
    """Check that config.batch_size splits evenly; raise naming the key before any compile."""
    global_size, accum = settings.batch_size, settings.grad_accum_steps
    divisor = num_shards * accum
    if global_size % divisor:
        suggestion = max(divisor, (global_size // divisor) * divisor)
        raise ValueError(
            f"config.batch_size={global_size} (global) is not divisible by {divisor} = "
            f"{num_shards} batch shards ({shards_description}) x config.grad_accum_steps={accum}: "
            f"every shard needs the same whole number of rows in every micro-batch; "
            f"e.g. use config.batch_size={suggestion}"
        )
    return BatchLayout(global_size, num_shards, accum, process_count)


def _check_host_blocks(shard_of_device: Mapping[jax.Device, int], num_shards: int) -> None:
    """Process p must hold exactly batch shards [p·k, (p+1)·k): the rows the data pipeline
    gives it (its contiguous 1/process_count of the global batch)."""
    processes = sorted({d.process_index for d in shard_of_device})
    per_process = num_shards // len(processes)
    for p in processes:
        held = sorted({s for d, s in shard_of_device.items() if d.process_index == p})
        expected = list(range(p * per_process, (p + 1) * per_process))
        if held != expected:
            raise ValueError(
                f"config.mesh: process {p} holds batch shards {held}, but the data pipeline gives "
                f"it rows of shards {expected}; make config.mesh.data x config.mesh.fsdp a "
                f"multiple of the {len(processes)} processes (tensor parallelism stays within a "
                f"host)"
            )


# --------------------------------------------------------------------------------------------
# Runners


class Runner:
    """jit-compiled train and eval steps over a (data, fsdp, tensor) Mesh.

    Interface shared with PmapRunner: `init_state(rng, params=None)`, `abstract_state` (for
    orbax restore), `train_step(state, host_batch, base_rng)`, `eval_step(params, host_batch)`
    (metric sums and the global batch's per-row predictions, on every host), `place_batch`,
    `train_step_placed(state, place_batch(host_batch), base_rng)`,
    `batch` (the BatchLayout) and `num_batch_shards`. Host batches are this process's rows of
    the global batch, [batch.per_host, ...] numpy arrays.
    """

    def __init__(self, settings: ParallelSettings, task: train.Task,
                 tx: optax.GradientTransformation,
                 devices: Sequence[jax.Device] | None = None,
                 compiler_options: Mapping[str, Any] | None = None) -> None:
        self.task = task
        self.tx = tx
        self.mesh = make_mesh(settings.mesh, devices)
        num_shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.batch = batch_layout(
            settings, num_shards,
            f"config.mesh.data={self.mesh.shape['data']} x config.mesh.fsdp="
            f"{self.mesh.shape['fsdp']}",
            len({d.process_index for d in self.mesh.devices.flat}),
        )
        self.batch_sharding = NamedSharding(self.mesh, P(BATCH_AXES))
        _check_host_blocks(self._batch_shard_of_device(), num_shards)
        shapes, self.state_shardings, self.replicated_notes = state_shardings(task, tx, self.mesh)
        for note in self.replicated_notes:
            logging.info("partitioning: %s", note)
        self.abstract_state = _abstract(shapes, self.state_shardings)
        self.replicated = NamedSharding(self.mesh, P())
        step_fn = train.make_train_step(task, tx, grad_accum_steps=settings.grad_accum_steps)
        self.jitted_train_step = jax.jit(
            _gathering_params(step_fn, self.state_shardings.params),
            in_shardings=(self.state_shardings, self.batch_sharding, self.replicated),
            out_shardings=(self.state_shardings, self.replicated),
            donate_argnums=(0,),
            compiler_options=compiler_options,
        )
        self._eval_step = jax.jit(
            train.make_eval_step(task),
            in_shardings=(self.state_shardings.params, self.batch_sharding),
            out_shardings=self.replicated,
            compiler_options=compiler_options,
        )
        self._init = jax.jit(
            lambda rng, params: train.create_train_state(task, tx, rng, params),
            out_shardings=self.state_shardings, compiler_options=compiler_options,
        )

    def _batch_shard_of_device(self) -> dict[jax.Device, int]:
        fsdp = self.mesh.shape["fsdp"]
        return {
            device: index[0] * fsdp + index[1]
            for index, device in np.ndenumerate(self.mesh.devices)
        }

    @property
    def num_batch_shards(self) -> int:
        return self.batch.num_shards

    def init_state(self, rng: jax.Array, params: Any = None) -> train.TrainState:
        """A step-0 state with fresh params, or with `params` (host arrays, e.g. a pretrained
        encoder and new heads) placed as the state's shardings say."""
        return self._init(rng, params)

    def place_batch(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's [per_host, ...] rows -> global [batch_size, ...] arrays over (data, fsdp)."""
        placed = {}
        for key, value in host_batch.items():
            value = np.asarray(value)
            _check_host_rows(key, value, self.batch)
            global_shape = (self.batch.global_size, *value.shape[1:])
            placed[key] = jax.make_array_from_process_local_data(
                self.batch_sharding, value, global_shape)
        return placed

    def train_step(self, state: train.TrainState, host_batch: Mapping[str, np.ndarray],
                   base_rng: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
        return self.train_step_placed(state, self.place_batch(host_batch), base_rng)

    def train_step_placed(self, state: train.TrainState, batch: Mapping[str, jax.Array],
                          base_rng: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
        """The step on a batch `place_batch` made (see DevicePrefetcher)."""
        return self.jitted_train_step(state, batch, base_rng)

    def eval_step(self, params: Any, host_batch: Mapping[str, np.ndarray]
                  ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        return self._eval_step(params, self.place_batch(host_batch))

    def batch_tokens(self, batch: Mapping[str, Any]) -> int:
        """Token slots (padding included) of the global batch behind a placed batch."""
        return int(np.prod(batch["input_mask"].shape))


def _check_host_rows(key: str, value: np.ndarray, layout: BatchLayout) -> None:
    if value.ndim == 0 or value.shape[0] != layout.per_host:
        raise ValueError(
            f"host batch field {key!r} has shape {value.shape}, but this host's part of "
            f"config.batch_size={layout.global_size} over {layout.process_count} process(es) is "
            f"{layout.per_host} rows"
        )


class PmapRunner:
    """pmap-ed train and eval steps: params replicated on every device, sums across devices.

    The state is held in unreplicated shapes, replicated over a one-axis Mesh of all devices,
    and enters `pmap` unmapped (in_axes=None) and leaves it unmapped (out_axes=None): the step's
    psums make every device's copy identical. So the same train state (and checkpoint) serves
    both runners, and pretrain.py drives either without knowing which.
    """

    def __init__(self, settings: ParallelSettings, task: train.Task,
                 tx: optax.GradientTransformation,
                 devices: Sequence[jax.Device] | None = None) -> None:
        for axis in ("fsdp", "tensor"):
            if int(settings.mesh[axis]) != 1:
                raise ValueError(
                    f"config.mesh.{axis}={settings.mesh[axis]}: config.parallelism='pmap' "
                    f"replicates params on every device; use config.parallelism='jit' to shard them"
                )
        self.task = task
        self.tx = tx
        self.devices = _by_process(devices if devices is not None else jax.devices())
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        self.mesh = Mesh(np.asarray(self.devices, dtype=object), (PMAP_AXIS,))
        self.batch = batch_layout(settings, len(self.devices), f"{len(self.devices)} devices",
                                  len({d.process_index for d in self.devices}))
        if self.batch.per_host != len(self.local_devices) * self.batch.per_shard:
            raise ValueError("pmap needs the same number of devices on every process")
        self.replicated = NamedSharding(self.mesh, P())
        shapes = jax.eval_shape(lambda: train.create_train_state(task, tx, jax.random.key(0)))
        self.state_shardings = jax.tree.map(lambda _: self.replicated, shapes)
        self.abstract_state = _abstract(shapes, self.state_shardings)
        self.replicated_notes: list[str] = []
        step_fn = train.make_train_step(task, tx, grad_accum_steps=settings.grad_accum_steps,
                                        axis_name=PMAP_AXIS)
        self.pmapped_train_step = jax.pmap(
            step_fn, axis_name=PMAP_AXIS, in_axes=(None, 0, None), out_axes=(None, None),
            devices=self.devices, donate_argnums=(0,),
        )
        self._eval_step = jax.pmap(
            train.make_eval_step(task, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS,
            in_axes=(None, 0), out_axes=None, devices=self.devices,
        )
        self._init = jax.jit(lambda rng, params: train.create_train_state(task, tx, rng, params),
                             out_shardings=self.state_shardings)

    @property
    def num_batch_shards(self) -> int:
        return self.batch.num_shards

    def init_state(self, rng: jax.Array, params: Any = None) -> train.TrainState:
        return self._init(rng, params)

    def place_batch(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This host's [per_host, ...] rows -> [local_devices, per_device, ...] for pmap."""
        placed = {}
        for key, value in host_batch.items():
            value = np.asarray(value)
            _check_host_rows(key, value, self.batch)
            placed[key] = value.reshape(len(self.local_devices), self.batch.per_shard,
                                        *value.shape[1:])
        return placed

    def _global(self, tree: Any) -> Any:
        """pmap returns host-local arrays when several processes run: make them global again
        (no copy), so that orbax sees one array per param, as it does for the jit runner."""
        if jax.process_count() == 1:
            return tree
        return multihost_utils.host_local_array_to_global_array(tree, self.mesh, P())

    def train_step(self, state: train.TrainState, host_batch: Mapping[str, np.ndarray],
                   base_rng: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
        return self.train_step_placed(state, self.place_batch(host_batch), base_rng)

    def train_step_placed(self, state: train.TrainState, batch: Mapping[str, np.ndarray],
                          base_rng: jax.Array) -> tuple[train.TrainState, dict[str, jax.Array]]:
        return self._global(self.pmapped_train_step(state, batch, base_rng))

    def eval_step(self, params: Any, host_batch: Mapping[str, np.ndarray]
                  ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        return self._global(self._eval_step(params, self.place_batch(host_batch)))

    def batch_tokens(self, batch: Mapping[str, Any]) -> int:
        """Token slots (padding included) of the global batch behind a placed batch."""
        return int(np.prod(batch["input_mask"].shape)) * self.batch.process_count


class DevicePrefetcher:
    """Batches placed on the devices ahead of the step that consumes them.

    Iterating yields `place(host_batch)` for each host batch, keeping `ahead` placed batches
    queued behind the one handed out, so the transfer of batch s + 1 overlaps step s (steps are
    dispatched asynchronously). `wait_seconds` adds up the time `__next__` blocked on the host
    pipeline and on placement: the time the train loop could not dispatch its next step.
    """

    def __init__(self, host_batches: Iterator[Mapping[str, np.ndarray]],
                 place: Callable[[Mapping[str, np.ndarray]], Any], ahead: int = 1) -> None:
        self._host_batches = host_batches
        self._place = place
        self._ahead = ahead
        self._queue: collections.deque = collections.deque()
        self.wait_seconds = 0.0

    def __iter__(self) -> "DevicePrefetcher":
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            while len(self._queue) <= self._ahead:
                try:
                    self._queue.append(self._place(next(self._host_batches)))
                except StopIteration:
                    break
            if not self._queue:
                raise StopIteration
            return self._queue.popleft()
        finally:
            self.wait_seconds += time.perf_counter() - start


def build_runner(config: ConfigDict, task: train.Task, tx: optax.GradientTransformation,
                 devices: Sequence[jax.Device] | None = None,
                 compiler_options: Mapping[str, Any] | None = None) -> Runner | PmapRunner:
    """The runner `config.parallelism` names, with the batch layout checked (nothing compiled);
    it gets the config's `ParallelSettings`, not the config.

    `devices` defaults to all of them. `compiler_options` are XLA options for the jit runner's
    steps, e.g. {"xla_backend_optimization_level": 0} halves CPU compile time where run time
    does not matter (tests); pmap compiles with the defaults.
    """
    settings = ParallelSettings.from_config(config)
    if settings.parallelism == "jit":
        return Runner(settings, task, tx, devices, compiler_options)
    if settings.parallelism == "pmap":
        return PmapRunner(settings, task, tx, devices)
    raise ValueError(f"config.parallelism must be 'jit' or 'pmap', got {settings.parallelism!r}")


# --------------------------------------------------------------------------------------------
# Memory of a compiled step


def batch_shapes(config: ConfigDict, rows: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every field of a pretraining batch of `rows` sequences (the format
    bert.data produces), so a step can be compiled without data."""
    seq, preds = int(config.max_seq_len), int(config.max_predictions_per_seq)
    i32, f32 = np.dtype(np.int32), np.dtype(np.float32)
    shapes = dict(
        input_ids=((rows, seq), i32), input_mask=((rows, seq), i32),
        segment_ids=((rows, seq), i32), masked_lm_positions=((rows, preds), i32),
        masked_lm_ids=((rows, preds), i32), masked_lm_weights=((rows, preds), f32),
        next_sentence_labels=((rows,), i32), next_sentence_weights=((rows,), f32),
    )
    if config.data.get("packing", False):  # K sequences per row (bert/data/packing.py)
        k = int(config.data.max_instances_per_pack)
        shapes.update(
            next_sentence_labels=((rows, k), i32), next_sentence_weights=((rows, k), f32),
            position_ids=((rows, seq), i32), pack_ids=((rows, seq), i32),
            nsp_positions=((rows, k), i32),
        )
    return shapes


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes per device of one compiled train step."""

    params: int  # this device's shards of the params
    opt_state: int  # ... and of the optimizer state (follows the params)
    temp: int  # XLA temporaries: activations kept for the backward pass, gradients, buffers
    peak: int  # arguments + temporaries + outputs not written in place of donated arguments
    replicated_notes: tuple[str, ...]  # dims left replicated because the mesh does not divide them


def _bytes_per_device(abstract: Any) -> int:
    return sum(
        int(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(abstract)
    )


def step_memory(runner: Runner, config: ConfigDict) -> StepMemory:
    """Compile the train step for a pretraining batch of `config` from shapes alone (no param
    is allocated) and read XLA's memory analysis of the per-device program."""
    batch = {
        k: jax.ShapeDtypeStruct(shape, dtype, sharding=runner.batch_sharding)
        for k, (shape, dtype) in batch_shapes(config, runner.batch.global_size).items()
    }
    key = jax.eval_shape(lambda: jax.random.key(0))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=runner.replicated)
    compiled = runner.jitted_train_step.lower(runner.abstract_state, batch, key).compile()
    analysis = compiled.memory_analysis()
    peak = (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes
            + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)
    return StepMemory(
        params=_bytes_per_device(runner.abstract_state.params),
        opt_state=_bytes_per_device(runner.abstract_state.opt_state),
        temp=int(analysis.temp_size_in_bytes),
        peak=int(peak),
        replicated_notes=tuple(runner.replicated_notes),
    )
