"""Fine-tuning models: `BertModel` plus one small task head, and their start from pretraining.

Every task model names its encoder `bert`, exactly as `BertForPreTraining` does, so the encoder
and pooler of a pretrained checkpoint drop into `params["bert"]` unchanged. The heads are what
the paper adds per task: one dense layer on the pooled [CLS] vector (classification, regression
with num_labels=1), on every token (tagging), or two logits per token (span start / end).

`init_finetune_params` builds a task model's params from any model folder or pretraining work
directory: whatever the task model shares with the checkpoint is restored, its own heads are
initialised fresh, the pretraining heads (MLM, NSP) are dropped, and a report says which is which.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert import checkpoint
from bert.model import BertConfig, BertModel, init_params

Array = jax.Array
Params = dict


def _head(config: BertConfig, features: int, name: str) -> nn.Dense:
    """A task head's dense layer: float32 logits, truncated-normal init like the encoder's."""
    return nn.Dense(
        features,
        dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.truncated_normal(config.initializer_range), ("embed", None)
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
        name=name,
    )


class _Classifier(nn.Module):
    """One dense layer over the pooled [CLS] vector or over every token, after dropout."""

    config: BertConfig
    num_labels: int
    per_token: ClassVar[bool]

    @nn.compact
    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array, *,
                 deterministic: bool = True) -> Array:
        encoded = BertModel(self.config, name="bert")(
            input_ids, segment_ids, input_mask, deterministic=deterministic
        )
        features = encoded.sequence_output if self.per_token else encoded.pooled_output
        features = nn.Dropout(self.config.dropout_rate)(features, deterministic=deterministic)
        return _head(self.config, self.num_labels, "classifier")(features.astype(jnp.float32))


class BertForSequenceClassification(_Classifier):
    """Logits (B, num_labels) from the pooled [CLS] vector; num_labels=1 is regression."""

    per_token = False


class BertForTokenClassification(_Classifier):
    """Logits (B, T, num_labels) for every token, e.g. BIO tags for named entities."""

    per_token = True


class BertForQuestionAnswering(nn.Module):
    """Span start and end logits, (B, T) each, as in the paper's SQuAD setup."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array, *,
                 deterministic: bool = True) -> tuple[Array, Array]:
        encoded = BertModel(self.config, name="bert")(
            input_ids, segment_ids, input_mask, deterministic=deterministic
        )
        logits = _head(self.config, 2, "span")(encoded.sequence_output.astype(jnp.float32))  # (B, T, 2)
        return logits[..., 0], logits[..., 1]


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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_only(model: nn.Module, names: tuple[str, ...], rng: Array) -> dict[str, Array]:
    """Fresh values of just `names`: XLA drops the unused (encoder) initialisers entirely."""
    fresh = _flatten(init_params(model, rng))
    return {name: fresh[name] for name in names}


def init_finetune_params(checkpoint_dir: str, model: nn.Module,
                         rng: jax.Array) -> tuple[Params, InitReport]:
    """Params for `model` (any module whose encoder is named `bert`) started from a checkpoint.

    `checkpoint_dir` is a model folder or a pretraining work directory (its latest step).
    `model.config` must have the checkpoint's architecture; a different size is an error naming
    the field rather than a silent re-initialisation.
    """
    saved_config = checkpoint.read_model_config(checkpoint_dir)
    task_config: BertConfig = model.config
    different = [f"{f}: checkpoint {getattr(saved_config, f)}, model {getattr(task_config, f)}"
                 for f in _SHAPE_FIELDS if getattr(saved_config, f) != getattr(task_config, f)]
    if different:
        raise ValueError(f"{checkpoint_dir}/{checkpoint.CONFIG_FILE} does not match the task "
                         f"model's config: {'; '.join(different)}")
    saved = _flatten(checkpoint.load_params(checkpoint_dir))
    shapes = _flatten(jax.eval_shape(lambda: init_params(model, rng)))  # no memory, no compile
    misshaped = [f"{name} {np.shape(saved[name])} vs {shape.shape}"
                 for name, shape in shapes.items()
                 if name in saved and np.shape(saved[name]) != shape.shape]
    if misshaped:
        raise ValueError(f"{checkpoint_dir}: params shaped unlike the task model's: "
                         + ", ".join(misshaped))
    report = InitReport(
        restored=tuple(sorted(n for n in shapes if n in saved)),
        initialised=tuple(sorted(n for n in shapes if n not in saved)),
        dropped=tuple(sorted(n for n in saved if n not in shapes)),
    )
    params = {name: jnp.asarray(saved[name]) for name in report.restored}
    params.update(_init_only(model, report.initialised, rng))
    return _unflatten(params), report
