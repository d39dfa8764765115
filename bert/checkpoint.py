"""Orbax checkpoints of training runs, and self-describing model folders.

A pretraining work directory and a model folder share one layout for what describes the model,
so either can be passed wherever a MODEL_DIR is expected:

    bert_config.json        the architecture (BertConfig)
    tokenizer/              the tokenizer's own files
    params/                 (model folder) orbax params of BertForPreTraining
    checkpoints/<step>/     (work directory) orbax train state + JSON metadata per saved step

Orbax writes each step into a temporary folder and renames it when complete, so a kill during a
save never leaves a half-written step that looks finished.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from bert.model import BertConfig

CONFIG_FILE = "bert_config.json"
TOKENIZER_DIR = "tokenizer"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"


class CheckpointManager:
    """Saves every `checkpoint_every` steps, keeps the newest `keep`, restores the latest."""

    def __init__(self, workdir: str, *, keep: int, async_save: bool = True) -> None:
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS_DIR))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        return self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restore `step` into the shapes, dtypes and shardings of `abstract_state`."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

    def wait(self) -> None:
        """Block until an asynchronous save in flight is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding placeholders of `tree` for restoring without holding two copies."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def write_model_description(directory: str, config: BertConfig, tokenizer: Any) -> None:
    """bert_config.json and tokenizer/ beside the params, written atomically per file."""
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(config.to_json())
    os.replace(tmp, os.path.join(directory, CONFIG_FILE))
    tokenizer.save(os.path.join(directory, TOKENIZER_DIR))


def read_model_config(directory: str) -> BertConfig:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{directory} is neither a model folder nor a pretraining work directory: "
            f"{CONFIG_FILE} is missing"
        )
    with open(path) as f:
        return BertConfig.from_dict(json.load(f))


def save_params(directory: str, params: Any) -> None:
    """params/ of a model folder (orbax, atomic)."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(os.path.join(directory, PARAMS_DIR)), params, force=True)
    checkpointer.wait_until_finished()


def load_params(directory: str) -> Any:
    """Params of BertForPreTraining from a model folder or a work directory's latest checkpoint.

    Restored as host-local arrays on the default device; callers reshard as they need.
    """
    params_dir = os.path.abspath(os.path.join(directory, PARAMS_DIR))
    if os.path.isdir(params_dir):
        return ocp.StandardCheckpointer().restore(params_dir)
    checkpoints = os.path.join(directory, CHECKPOINTS_DIR)
    if os.path.isdir(checkpoints):
        manager = ocp.CheckpointManager(os.path.abspath(checkpoints), item_names=("state", "meta"))
        step = manager.latest_step()
        if step is not None:
            logging.info("loading params of step %d from %s", step, checkpoints)
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
            manager.close()
            return restored.state["params"]
    raise FileNotFoundError(f"no params in {directory}: neither {PARAMS_DIR}/ nor a checkpoint")
