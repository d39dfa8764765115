"""Fine-tuning models: `BertModel` plus one small task head, their description, and their start.

Every task model names its encoder `bert`, exactly as `BertForPreTraining` does, so the encoder
and pooler of a pretrained checkpoint drop into `params["bert"]` unchanged. The heads are what
the paper adds per task, placed as transformers' PyTorch heads place them:

    sequence classification   pooled [CLS] -> dropout -> dense(num_labels)   (num_labels=1: regression)
    token classification      every token  -> dropout -> dense(num_labels)
    question answering        every token  -> dense(2): start and end logits (no dropout)
    multiple choice           (B, C, T) as B·C rows -> pooled [CLS] -> dropout -> dense(1) -> (B, C)

A fine-tuned model folder (or fine-tuning work directory) says which head it holds in
`task.json` beside `bert_config.json`:

    {"task": "sequence_classification", "labels": ["negative", "positive"]}

`task` is one of HEAD_KINDS (the table of head kinds); `labels` are the label strings in logit order (two or more for
sequence and token classification; at most one, the predicted quantity's name, for regression;
none for question answering and multiple choice). A folder without it is a pretrained encoder.

`init_finetune_params` builds a task model's params from any model folder or work directory:
whatever the task model shares with the checkpoint is restored (a head only when the folder's
task.json has the same kind and labels), the rest initialised fresh, the pretraining heads (MLM,
NSP) dropped, and a report says which is which.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert import checkpoint, files, ops
from bert.model import BertConfig, BertModel, EncoderOutput, init_params

Array = jax.Array
Params = dict

TASK_FILE = "task.json"


def _encode(config: BertConfig, input_ids: Array, segment_ids: Array, input_mask: Array,
            deterministic: bool) -> EncoderOutput:
    return BertModel(config, name="bert")(input_ids, segment_ids, input_mask,
                                          deterministic=deterministic)


def _pooled(config: BertConfig, input_ids: Array, segment_ids: Array, input_mask: Array,
            deterministic: bool) -> Array:
    """The pooled [CLS] vector (B, H). Nothing else of the last block is read, so it computes
    only the [CLS] row (BertModel's output_positions): the same values for less of its work."""
    cls_only = jnp.zeros((input_ids.shape[0], 1), jnp.int32)
    return BertModel(config, name="bert")(input_ids, segment_ids, input_mask,
                                          output_positions=cls_only,
                                          deterministic=deterministic).pooled_output


def _head(config: BertConfig, features: int, name: str, x: Array) -> Array:
    """A task head's dense layer on x: float32 logits, truncated-normal init like the encoder's."""
    dense = nn.Dense(
        features,
        dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.truncated_normal(config.initializer_range), ("embed", None)
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
        name=name,
    )
    return dense(x.astype(jnp.float32))


def _dropout(config: BertConfig, x: Array, deterministic: bool) -> Array:
    return ops.Dropout(config.dropout_rate)(x, deterministic=deterministic)


class BertForSequenceClassification(nn.Module):
    """Logits (B, num_labels) from the pooled [CLS] vector; num_labels=1 is regression: (B, 1)."""

    config: BertConfig
    num_labels: int

    @property
    def kind(self) -> str:
        return "regression" if self.num_labels == 1 else "sequence_classification"

    @nn.compact
    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array, *,
                 deterministic: bool = True) -> Array:
        pooled = _pooled(self.config, input_ids, segment_ids, input_mask, deterministic)
        return _head(self.config, self.num_labels, "classifier",
                     _dropout(self.config, pooled, deterministic))  # (B, num_labels)


class BertForTokenClassification(nn.Module):
    """Logits (B, T, num_labels) for every token, e.g. BIO tags for named entities."""

    config: BertConfig
    num_labels: int
    kind: ClassVar[str] = "token_classification"

    @nn.compact
    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array, *,
                 deterministic: bool = True) -> Array:
        tokens = _encode(self.config, input_ids, segment_ids, input_mask, deterministic).sequence_output
        return _head(self.config, self.num_labels, "classifier",
                     _dropout(self.config, tokens, deterministic))  # (B, T, num_labels)


class BertForQuestionAnswering(nn.Module):
    """Span start and end logits, (B, T) each, as in the paper's SQuAD setup (no dropout)."""

    config: BertConfig
    kind: ClassVar[str] = "question_answering"

    @nn.compact
    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array, *,
                 deterministic: bool = True) -> tuple[Array, Array]:
        tokens = _encode(self.config, input_ids, segment_ids, input_mask, deterministic).sequence_output
        logits = _head(self.config, 2, "span", tokens)  # (B, T, 2)
        return logits[..., 0], logits[..., 1]


class BertForMultipleChoice(nn.Module):
    """One score per choice: inputs (B, C, T) run as B·C rows, scores (B, C) for a softmax over C.

    Any leading shape works, (B, T) included (one score per row), as initialisation uses.
    """

    config: BertConfig
    kind: ClassVar[str] = "multiple_choice"

    @nn.compact
    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array, *,
                 deterministic: bool = True) -> Array:
        rows = lambda x: x.reshape(-1, x.shape[-1])  # (B·C, T)
        pooled = _pooled(self.config, rows(input_ids), rows(segment_ids), rows(input_mask),
                         deterministic)  # (B·C, H)
        scores = _head(self.config, 1, "classifier", _dropout(self.config, pooled, deterministic))
        return scores.reshape(input_ids.shape[:-1])  # (B, C)


# ---------------------------------------------------------------------------------------------
# task.json: which head a model folder holds


@dataclasses.dataclass(frozen=True)
class HeadKind:
    """One kind of task head: the labels it takes, the model it makes, and how transformers
    names it (bert/convert.py). HEAD_KINDS is the one table every part that knows heads reads:
    task.json, fine-tuning (each family names the kinds it trains), and conversion."""

    name: str  # task.json's "task"
    model: Callable[[BertConfig, int], nn.Module]  # (encoder config, number of labels) -> model
    min_labels: int
    max_labels: int | None  # None: no limit
    labels_said: str  # how the label count is said in an error
    outputs: int | None  # rows of the head's kernel; None: one per label
    param: str  # the head's dense layer in the params
    hf_class: str  # transformers' model class: config.json's `architectures`
    hf_prefix: str  # transformers' head tensors: `<prefix>.weight`, `<prefix>.bias`
    hf_pooled: bool  # whether transformers' model has a pooler

    @property
    def labelled(self) -> bool:
        """Whether its labels are a config.json label map (id2label, label2id)."""
        return self.max_labels != 0

    @property
    def counts_labels(self) -> bool:
        """Whether the head has one output per label, so a head trained for another label set
        has another shape."""
        return self.outputs is None

    def num_outputs(self, labels: Sequence[str]) -> int:
        return len(labels) if self.outputs is None else self.outputs


HEAD_KINDS: dict[str, HeadKind] = {kind.name: kind for kind in (
    HeadKind("sequence_classification", BertForSequenceClassification, 2, None,
             "at least 2 labels", None, "classifier", "BertForSequenceClassification",
             "classifier", True),
    HeadKind("regression", lambda config, _: BertForSequenceClassification(config, 1), 0, 1,
             "at most 1 label (the name of the predicted value)", 1, "classifier",
             "BertForSequenceClassification", "classifier", True),
    HeadKind("token_classification", BertForTokenClassification, 2, None, "at least 2 labels",
             None, "classifier", "BertForTokenClassification", "classifier", False),
    HeadKind("question_answering", lambda config, _: BertForQuestionAnswering(config), 0, 0,
             "no labels", 2, "span", "BertForQuestionAnswering", "qa_outputs", False),
    HeadKind("multiple_choice", lambda config, _: BertForMultipleChoice(config), 0, 0,
             "no labels", 1, "classifier", "BertForMultipleChoice", "classifier", True),
)}


@dataclasses.dataclass(frozen=True)
class TaskHead:
    """The head a fine-tuned model has: its kind (one of HEAD_KINDS) and labels in logit order."""

    kind: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"task: {self.kind!r} is not one of {', '.join(HEAD_KINDS)}")
        if isinstance(self.labels, str) or not isinstance(self.labels, Sequence):
            raise ValueError(f"labels: expected a list of strings, got {self.labels!r}")
        object.__setattr__(self, "labels", tuple(self.labels))
        bad = [label for label in self.labels if not isinstance(label, str) or not label]
        if bad:
            raise ValueError(f"labels: {bad!r} are not non-empty strings")
        repeated = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if repeated:
            raise ValueError(f"labels: repeated {', '.join(map(repr, repeated))}")
        kind = self.head_kind
        count = len(self.labels)
        if count < kind.min_labels or (kind.max_labels is not None and count > kind.max_labels):
            raise ValueError(f"labels: a {self.kind} head takes {kind.labels_said}, got {count}")

    @property
    def head_kind(self) -> HeadKind:
        return HEAD_KINDS[self.kind]

    def model(self, config: BertConfig) -> nn.Module:
        """The task model this head describes, on an encoder of `config`."""
        return self.head_kind.model(config, len(self.labels))

    def to_json(self) -> str:
        return json.dumps({"task": self.kind, "labels": list(self.labels)}, indent=2,
                          ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, values: Any, source: str) -> "TaskHead":
        """The head a parsed task.json describes; errors start with `source`."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object with task and labels")
        unknown = sorted(set(values) - {"task", "labels"})
        if unknown:
            raise ValueError(f"{source}: unknown fields {', '.join(unknown)}")
        if "task" not in values:
            raise ValueError(f"{source}: task is missing (one of {', '.join(HEAD_KINDS)})")
        try:
            return cls(values["task"], values.get("labels", ()))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e


def save_task_head(directory: str, head: TaskHead) -> None:
    """task.json in a model folder or work directory, beside bert_config.json (atomic)."""
    files.path(directory).mkdir(parents=True, exist_ok=True)
    files.write_atomically(files.path(directory) / TASK_FILE, head.to_json())


def read_task_head(directory: str) -> TaskHead | None:
    """The head `directory` says it holds; None for a pretrained encoder (no task.json)."""
    path = files.path(directory) / TASK_FILE
    if not path.exists():
        return None
    return TaskHead.from_dict(files.json_object(path.read_text(), path), path)


# ---------------------------------------------------------------------------------------------
# Params of task models


# Fields that fix the shape of some encoder param; dropout and dtype may differ when fine-tuning.
_SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")


@dataclasses.dataclass(frozen=True)
class InitReport:
    """Param paths ("bert/layer_0/mlp/output/kernel") by where their values came from."""

    restored: tuple[str, ...]  # copied from the checkpoint
    initialised: tuple[str, ...]  # freshly initialised: the task heads
    dropped: tuple[str, ...]  # in the checkpoint, unused by the task model (pretraining heads)

    def summary(self) -> str:
        return (f"restored {len(self.restored)} params from the checkpoint; "
                f"initialised {', '.join(self.initialised) or 'nothing'}; "
                f"dropped {', '.join(self.dropped) or 'nothing'}")


def _flatten(tree: Params) -> dict[str, np.ndarray]:
    return {
        "/".join(str(k.key) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _unflatten(flat: dict[str, np.ndarray]) -> Params:
    tree: Params = {}
    for name, leaf in flat.items():
        node = tree
        *parents, last = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = leaf
    return tree


def _param_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every param's shape, from shapes alone: no memory, no compile."""
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
    return {name: tuple(leaf.shape) for name, leaf in _flatten(shapes).items()}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_only(model: nn.Module, names: tuple[str, ...], rng: Array) -> dict[str, Array]:
    """Fresh values of just `names`: XLA drops the unused (encoder) initialisers entirely."""
    fresh = _flatten(init_params(model, rng))
    return {name: fresh[name] for name in names}


def _same_head(saved: TaskHead | None, model: nn.Module, labels: Sequence[str] | None) -> bool:
    """Whether the checkpoint's head is the one `model` has, so its params may be restored."""
    if saved is None or saved.kind != getattr(model, "kind", None):
        return False
    if labels is not None and tuple(labels) != saved.labels:
        return False
    return not HEAD_KINDS[saved.kind].counts_labels or len(saved.labels) == model.num_labels


@dataclasses.dataclass
class Pretrained:
    """What fine-tuning starts from: a model's architecture, task head (None: a pretrained
    encoder), tokenizer and params. `folder` reads a model folder or work directory (tokenizer
    and params when first asked for); bert.convert builds one from a Hugging Face folder."""

    location: str
    config: BertConfig
    head: TaskHead | None
    _tokenizer: Any = None
    _params: Params | None = None

    @classmethod
    def folder(cls, location: str) -> "Pretrained":
        return cls(location, checkpoint.read_model_config(location), read_task_head(location))

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = checkpoint.load_tokenizer(self.location)
        return self._tokenizer

    def params(self) -> Params:
        """The whole model's params (read again from a folder on each call: nothing is held)."""
        return self._params if self._params is not None else checkpoint.load_params(self.location)


def init_finetune_params(source: "str | Pretrained", model: nn.Module, rng: jax.Array, *,
                         labels: Sequence[str] | None = None) -> tuple[Params, InitReport]:
    """Params for `model` (any module whose encoder is named `bert`) started from a checkpoint.

    `source` is a model folder or a work directory (its latest step), or a `Pretrained`. The
    encoder is restored; a task head only when the folder's task.json has the model's kind and,
    if given, these `labels` in this order (a head trained for other labels would silently mean
    other things), else it is initialised afresh. `model.config` must have the checkpoint's
    architecture; a different size is an error naming the field, never a re-initialisation.
    """
    pretrained = Pretrained.folder(source) if isinstance(source, str) else source
    checkpoint_dir = pretrained.location
    saved_config = pretrained.config
    task_config: BertConfig = model.config
    different = [f"{f}: checkpoint {getattr(saved_config, f)}, model {getattr(task_config, f)}"
                 for f in _SHAPE_FIELDS if getattr(saved_config, f) != getattr(task_config, f)]
    if different:
        raise ValueError(f"{checkpoint_dir}/{checkpoint.CONFIG_FILE} does not match the task "
                         f"model's config: {'; '.join(different)}")
    saved = _flatten(pretrained.params())
    shapes = _param_shapes(model)
    same_head = _same_head(pretrained.head, model, labels)
    wanted = [n for n in shapes if n in saved and (n.startswith("bert/") or same_head)]
    misshaped = [f"{n} {np.shape(saved[n])} vs {shapes[n]}" for n in wanted
                 if np.shape(saved[n]) != shapes[n]]
    if misshaped:
        raise ValueError(f"{checkpoint_dir}: params shaped unlike the task model's: "
                         + ", ".join(misshaped))
    report = InitReport(
        restored=tuple(sorted(wanted)),
        initialised=tuple(sorted(n for n in shapes if n not in wanted)),
        dropped=tuple(sorted(n for n in saved if n not in wanted)),
    )
    params = {name: jnp.asarray(saved[name]) for name in report.restored}
    params.update(_init_only(model, report.initialised, rng))
    return _unflatten(params), report


def check_task_params(params: Params, model: nn.Module, source: str) -> None:
    """Raises ValueError naming every param `model` lacks, does not have, or has in another shape."""
    expected = _param_shapes(model)
    actual = {name: tuple(np.shape(leaf)) for name, leaf in _flatten(params).items()}
    problems = []
    missing = sorted(set(expected) - set(actual))
    if missing:
        problems.append("missing " + ", ".join(missing))
    unexpected = sorted(set(actual) - set(expected))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected))
    misshaped = [f"{n} {actual[n]} (expected {expected[n]})" for n in sorted(expected)
                 if n in actual and actual[n] != expected[n]]
    if misshaped:
        problems.append("mis-shaped " + ", ".join(misshaped))
    if problems:
        raise ValueError(f"{source}: params do not fit {type(model).__name__}: " + "; ".join(problems))


def load_task_model(directory: str) -> tuple[TaskHead, nn.Module, Params]:
    """A fine-tuned model folder or work directory: its head, its model and its params."""
    head = read_task_head(directory)
    if head is None:
        raise FileNotFoundError(f"{directory} holds no fine-tuned model: {TASK_FILE} is missing")
    model = head.model(checkpoint.read_model_config(directory))
    params = checkpoint.load_params(directory)
    check_task_params(params, model, directory)
    return head, model, params
