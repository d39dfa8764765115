"""What a fine-tuning task family is, as bert.finetune and the one trainer see it.

A family is one module under bert/tasks/ that owns a kind of task end to end: the reader of its
files, the featurizer, the head its model gets (a kind of `bert.heads.HEAD_KINDS`), the loss
sums, the metrics, the prediction files, the checks of the config keys only it reads, and a
`Family` subclass that wires them into the trainer. bert/tasks/registry.py lists the families;
their `task_names` are what `config.task` may be. Adding a task is adding a family (docs/TASKS.md),
never a training loop.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from bert import heads, train
from bert.model import BertConfig
from bert.tasks import SkipCount
from bert.tokenizer import Tokenizer

Array = jax.Array
Batch = Mapping[str, Array]


class FineTuneTask(train.Task):
    """A task model whose loss is loss_sum / count, both summed over the global batch."""

    model_input_keys = ("input_ids", "segment_ids", "input_mask")

    def __init__(self, model: nn.Module, *, loss_sums: Callable[[Any, Batch], dict[str, Array]],
                 sum_keys: tuple[str, ...], predictions: Callable[[Any], dict[str, Array]],
                 count: Callable[[Batch], Array] | None = None, choices: int = 0,
                 inputs: Mapping[str, Array] | None = None) -> None:
        """`count`: the loss's denominator of a batch (default: its real rows, `examples_count`).
        `inputs`: init inputs of a model that takes other inputs than token ids; their keys
        become the batch fields passed to the model."""
        self.model = model
        self._loss_sums = loss_sums
        self.sum_keys = sum_keys
        self._count = count or examples_count
        self._predictions = predictions
        self._choices = choices
        self._inputs = inputs
        if inputs is not None:
            self.model_input_keys = tuple(inputs)

    def init_inputs(self) -> dict[str, Array]:
        if self._inputs is not None:
            return dict(self._inputs)
        shape = (1, self._choices, 8) if self._choices else (1, 8)
        ids = jnp.zeros(shape, jnp.int32)
        return dict(input_ids=ids, segment_ids=ids, input_mask=jnp.ones_like(ids))

    def sums(self, outputs: Any, batch: Batch) -> dict[str, Array]:
        return self._loss_sums(outputs, batch)

    def denominators(self, batch: Batch) -> Array:
        return jnp.maximum(self._count(batch), 1.0)

    def loss(self, sums: Mapping[str, Array], denominators: Array) -> Array:
        return sums["loss_sum"] / denominators

    def predictions(self, outputs: Any, batch: Batch) -> dict[str, Array]:
        return self._predictions(outputs)

    def finalize(self, sums: Mapping[str, float]) -> dict[str, float]:
        count = max(float(sums["count"]), 1.0)
        metrics = {"loss": float(sums["loss_sum"]) / count}
        for key, value in sums.items():
            if key not in ("loss_sum", "count"):
                metrics[key.replace("correct", "accuracy")] = float(value) / count
        return metrics


def examples_count(batch: Batch) -> Array:
    """The real rows of a batch (padding rows of an evaluation batch weigh 0)."""
    return jnp.sum(batch["example_weights"].astype(jnp.float32))


@dataclasses.dataclass
class Split:
    """One file's examples, their features (rows) and what maps rows back to examples."""

    name: str  # "train", "eval", "eval_mismatched", "test", "test_mismatched"
    path: str
    examples: Sequence[Any]
    features: dict[str, np.ndarray]
    extra: Any = None  # e.g. SQuAD windows, tagging word maps
    skipped: SkipCount = SkipCount()  # records the official recipe skips (counted, reported)

    @property
    def num_rows(self) -> int:
        return len(self.features["input_mask"])


def check(ok: bool, key: str, message: str) -> None:
    """Raise ValueError("config.KEY: message") unless `ok`: how a family names a bad key."""
    if not ok:
        raise ValueError(f"config.{key}: {message}")


class Family:
    """What bert.finetune needs from a task family."""

    task_names: ClassVar[tuple[str, ...]]  # the values of config.task it serves
    head_kinds: ClassVar[tuple[str, ...]] = ()  # the bert.heads kinds `objective` takes

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        """`pretrained`: the model config.init_checkpoint names, when the caller has it open."""
        self.config = config
        self.tokenizer = tokenizer
        self.pretrained = pretrained

    @classmethod
    def validate(cls, config: ConfigDict) -> None:
        """Raise ValueError naming the first bad key among those only this family reads;
        bert.config.validate_finetuning has checked the others."""

    @classmethod
    def objective(cls, model: nn.Module) -> FineTuneTask:
        """The trainer's view of a bert.heads model of one of `head_kinds`: its loss sums,
        their keys and its per-row predictions."""
        raise NotImplementedError

    @property
    def selection_metric(self) -> str:
        raise NotImplementedError

    def set_labels(self, train_split_path: str) -> None:
        """Fix the label list (from the config, the task, or the training file)."""

    @property
    def labels(self) -> tuple[str, ...]:
        return ()

    def load(self, name: str, path: str) -> Split:
        raise NotImplementedError

    def model(self, bert_config: BertConfig) -> nn.Module:
        raise NotImplementedError

    def task(self, model: nn.Module) -> FineTuneTask:
        """The trainer's view of `model`: by default its `objective`."""
        return self.objective(model)

    def initial_params(self, source: str | heads.Pretrained, model: nn.Module, rng: Array
                       ) -> tuple[Any, str]:
        """The params training starts from, and a line saying where they came from; None
        params: fresh ones from the runner. By default the checkpoint's encoder (and head, if
        it is this task's) with new heads, as the paper fine-tunes."""
        params, report = heads.init_finetune_params(source, model, rng, labels=self.labels or None)
        location = source if isinstance(source, str) else source.location
        return params, f"init from {location}: {report.summary()}"

    def task_head(self, model: nn.Module) -> heads.TaskHead | None:
        """The head the work directory says it holds (task.json beside bert_config.json); None:
        the trained params are no BERT task model, so the directory is not made a model folder."""
        return heads.TaskHead(model.kind, self.labels)

    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        """Writes the split's predictions in the task's customary format, first to
        DIR/<split>_predictions.<ext>; returns the paths of every file written."""
        raise NotImplementedError
