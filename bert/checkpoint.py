"""Orbax checkpoints of training runs, and self-describing model folders.

A pretraining work directory and a model folder share one layout for what describes the model,
so either can be passed wherever a MODEL_DIR is expected:

    bert_config.json        the architecture (BertConfig)
    tokenizer/              the tokenizer's own files
    params/                 (model folder) orbax params of BertForPreTraining
    checkpoints/<step>/     (work directory) orbax train state + JSON metadata per saved step

Orbax writes each step into a temporary folder and renames it when complete, so a kill during a
save never leaves a half-written step that looks finished. A finished step can still go bad on
disk (a truncated or bit-flipped file); orbax notices the first, not the second. So every step's
metadata carries a fingerprint of each array, computed before the save and checked after every
restore, and `restore_latest` falls back to the newest step that restores and matches, setting
the broken ones aside (never deleting them). Old steps are deleted only once a newer one is
finished, so retention never removes the last good checkpoint.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from bert import files
from bert import tokenizer as tokenizer_lib
from bert.model import BertConfig

CONFIG_FILE = "bert_config.json"
TOKENIZER_DIR = "tokenizer"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"
SET_ASIDE_DIR = "checkpoints_unusable"  # broken steps are moved here, beside checkpoints/
FINGERPRINTS_KEY = "fingerprints"  # in each step's metadata: {array path: uint32 fingerprint}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names its folder and what is wrong."""


class CheckpointManager:
    """Saves steps, keeps the newest `keep` finished ones, restores the newest good one."""

    def __init__(self, workdir: str, *, keep: int | None, async_save: bool = True) -> None:
        """`keep` None deletes nothing (for readers of a run's checkpoints). `workdir` may be
        a local path or a URL (bert.files)."""
        self.directory = files.absolute(workdir) / CHECKPOINTS_DIR
        self.set_aside_directory = files.absolute(workdir) / SET_ASIDE_DIR
        self._keep = keep
        # Retention is done here, not by orbax (max_to_keep), because orbax decides what to
        # delete when a save starts and deletes it even when that save then fails.
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(create=True,
                                                 enable_async_checkpointing=async_save),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def step_directory(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving `state` and `meta` (JSON) as `step`; returns whether a save started.

        The previous save is finished first, and only then are steps beyond the newest `keep`
        deleted, so at least one finished step is always on disk.
        """
        self.wait()
        meta = {**meta, FINGERPRINTS_KEY: fingerprints(state)}
        return self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def restore(self, step: int, abstract_state: Any | None) -> tuple[Any, dict[str, Any]]:
        """Restore `step` into the shapes, dtypes and shardings of `abstract_state` (None: as
        saved, in plain dicts and lists, on the default device).

        Raises CheckpointError when the arrays do not match the fingerprints saved with them.
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        state, meta = restored.state, restored.meta
        if not isinstance(meta, dict) or meta.get("step", step) != step:
            raise CheckpointError(f"{self.step_directory(step)}: its metadata does not describe "
                                  f"step {step}: {str(meta)[:200]}")
        expected = meta.get(FINGERPRINTS_KEY)
        if expected is None:  # saved before checkpoints carried fingerprints
            logging.warning("%s holds no array fingerprints: restored unverified",
                            self.step_directory(step))
            return state, meta
        actual = fingerprints(state)
        differing = sorted(k for k in actual.keys() | expected.keys()
                           if actual.get(k) != expected.get(k))
        if differing:
            raise CheckpointError(
                f"{self.step_directory(step)}: {len(differing)} array(s) differ from what was "
                f"saved (a corrupted file), e.g. {', '.join(differing[:3])}")
        return state, meta

    def restore_latest(self, abstract_state: Any | None, *,
                       set_aside: bool = True) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, meta) of the newest step that restores and verifies; None without steps.

        Each unusable step is logged with its reason. Once an older step restores, the newer
        broken ones are moved to `set_aside_directory` (so that training can save those steps
        again) unless `set_aside` is False. If no step restores, nothing is moved and
        CheckpointError lists every reason: that is a config that no longer fits the
        checkpoints as often as it is corruption.
        """
        failures: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as error:  # noqa: BLE001 (tensorstore raises bare Exception)
                reason = " ".join(str(error).split())[:500]
                logging.error("checkpoint step %d is unusable: %s", step, reason)
                failures.append((step, reason))
                continue
            if failures and set_aside:
                for bad_step, _ in failures:
                    self._set_aside(bad_step)
                self._manager.reload()
                logging.warning("using step %d, the newest usable checkpoint; unusable newer "
                                "steps %s were moved to %s", step, [s for s, _ in failures],
                                self.set_aside_directory)
            return step, state, meta
        if failures:
            raise CheckpointError(
                f"no usable checkpoint in {self.directory}: "
                + "; ".join(f"step {s}: {reason}" for s, reason in failures)
                + ". If the config changed, use a new --workdir; if the files are damaged, move "
                "them away to start over")
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            self.set_aside_directory.mkdir(parents=True, exist_ok=True)
            target = self.set_aside_directory / f"{step}.{int(time.time())}"
            self.step_directory(step).rename(target)
            logging.error("moved unusable checkpoint %s to %s", self.step_directory(step), target)
        multihost_utils.sync_global_devices(f"bert.checkpoint.set_aside.{step}")

    def wait(self) -> None:
        """Block until an asynchronous save in flight is on disk, then apply retention."""
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 (whatever the storage raised)
            self._manager.reload()
            raise CheckpointError(
                f"saving a checkpoint in {self.directory} failed ({error}); the newest finished "
                f"one, step {self._manager.latest_step()}, is kept") from error
        self._manager.reload()  # only steps whose save finished: a failed one is not listed
        if self._keep is not None:
            for step in self.all_steps()[: -self._keep]:
                self._manager.delete(step)

    def close(self) -> None:
        self.wait()
        self._manager.close()


def fingerprints(tree: Any) -> dict[str, int]:
    """{path: uint32} over every array of `tree`, whatever its sharding.

    Each element's bits are multiplied by an odd weight that depends on its position and
    summed modulo 2^32, so any single flipped bit, any changed element and any swapped pair
    changes the fingerprint. Computed on the devices: nothing is gathered to one host.
    """
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    values = _fingerprint_leaves([leaf for _, leaf in paths_and_leaves])
    return {_path_name(path): int(np.asarray(value.addressable_data(0)))
            for (path, _), value in zip(paths_and_leaves, values)}


def _path_name(path: tuple[Any, ...]) -> str:
    """"params/bert/..." whatever containers hold the leaf: restored without a target, a state
    saved as dataclasses and named tuples comes back as dicts and lists."""
    names = []
    for key in path:
        attribute = next((a for a in ("name", "key", "idx") if hasattr(key, a)), None)
        names.append(str(getattr(key, attribute) if attribute else key))
    return "/".join(names)


_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}


@jax.jit
def _fingerprint_leaves(leaves: list[jax.Array]) -> list[jax.Array]:
    return [_fingerprint(leaf) for leaf in leaves]


def _fingerprint(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    bits = jax.lax.bitcast_convert_type(x, _UNSIGNED[x.dtype.itemsize])  # 8 bytes: [..., 2]
    bits = bits.astype(jnp.uint32)
    # Row-major index of every element, built from iotas: reshaping a sharded array would move it.
    index = jnp.zeros(bits.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(bits.ndim)):
        iota = jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis)
        index = index + iota * jnp.uint32(stride % 2**32)
        stride *= bits.shape[axis]
    weights = (index * jnp.uint32(0x9E3779B1)) | jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


def write_model_description(directory: str, config: BertConfig, tokenizer: Any) -> None:
    """bert_config.json and tokenizer/ beside the params, written atomically per file."""
    files.path(directory).mkdir(parents=True, exist_ok=True)
    files.write_atomically(files.path(directory) / CONFIG_FILE, config.to_json())
    with files.staged_directory(files.path(directory) / TOKENIZER_DIR) as local:
        tokenizer.save(local)


def read_model_config(directory: str) -> BertConfig:
    path = files.path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} is neither a model folder nor a pretraining work directory: "
            f"{CONFIG_FILE} is missing"
        )
    return BertConfig.from_dict(json.loads(path.read_text()))


def load_tokenizer(directory: str) -> Any:
    """The tokenizer of a model folder or work directory, local or remote."""
    with files.local_copy(files.path(directory) / TOKENIZER_DIR) as local:
        return tokenizer_lib.load_tokenizer(local)


def save_params(directory: str, params: Any) -> None:
    """params/ of a model folder (orbax, atomic)."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(files.absolute(directory) / PARAMS_DIR, params, force=True)
    checkpointer.wait_until_finished()


def load_params(directory: str, step: int | None = None) -> Any:
    """Params of BertForPreTraining from a model folder or a work directory's latest checkpoint
    (with `step`: that checkpoint of a work directory, e.g. for fine-tuning along a run).

    Restored as host-local arrays on the default device; callers reshard as they need.
    """
    params_dir = files.absolute(directory) / PARAMS_DIR
    if step is None and params_dir.is_dir():
        return ocp.StandardCheckpointer().restore(params_dir)
    if (files.path(directory) / CHECKPOINTS_DIR).is_dir():
        manager = CheckpointManager(directory, keep=None)  # reads only: deletes and moves nothing
        try:
            if step is None:
                restored = manager.restore_latest(None, set_aside=False)
            elif step in manager.all_steps():
                restored = (step, *manager.restore(step, None))
            else:
                raise CheckpointError(f"{manager.directory} has no step {step}; it has "
                                      f"{manager.all_steps() or 'none'}")
        finally:
            manager.close()
        if restored is not None:
            step, state, _ = restored
            logging.info("loading params of step %d from %s", step, manager.directory)
            return state["params"]
    raise FileNotFoundError(f"no params in {directory}: neither {PARAMS_DIR}/ nor a checkpoint")
