"""The fine-tuning task families, by the task names `config.task` takes.

Each family is one module of bert/tasks (reader, featurizer, head kind, loss, metrics,
post-processing and its `Family` subclass, see bert/tasks/family.py); a new family is one more
module and one more entry in FAMILIES (docs/TASKS.md).
"""
from __future__ import annotations

import flax.linen as nn
from ml_collections import ConfigDict

from bert import heads
from bert.config import validate_finetuning
from bert.tasks import classification, feature_probe, multiple_choice, squad, tagging
from bert.tasks.family import Family, FineTuneTask, Split, check
from bert.tokenizer import Tokenizer

FAMILIES: tuple[type[Family], ...] = (
    classification.Classification,  # GLUE by name, and classify (any CSV/TSV/JSONL)
    squad.Squad,  # squad_v1, squad_v2
    tagging.Tagging,  # ner, tag (CoNLL columns)
    multiple_choice.MultipleChoice,  # swag
    feature_probe.FeatureProbe,  # ner_features (frozen layers + BiLSTM, Table 7)
)
TASKS: dict[str, type[Family]] = {name: family for family in FAMILIES
                                  for name in family.task_names}
TASK_NAMES = tuple(TASKS)

__all__ = ["FAMILIES", "TASKS", "TASK_NAMES", "Family", "FineTuneTask", "Split", "family",
           "objective", "validate"]


def validate(config: ConfigDict) -> None:
    """Raise ValueError naming the first bad key of a fine-tuning config, before reading data
    or compiling: the keys every task reads (bert.config), then `config.task` and the keys of
    its family."""
    validate_finetuning(config)
    check(config.task in TASKS, "task", f"{config.task!r} is not one of {', '.join(TASK_NAMES)}")
    TASKS[config.task].validate(config)


def family(config: ConfigDict, tokenizer: Tokenizer,
           pretrained: heads.Pretrained | None = None) -> Family:
    """The family of `config.task` (`pretrained`: config.init_checkpoint, opened)."""
    if config.task not in TASKS:
        raise ValueError(f"config.task={config.task!r} is not one of {', '.join(TASK_NAMES)}")
    return TASKS[config.task](config, tokenizer, pretrained)


def objective(model: nn.Module) -> FineTuneTask:
    """The trainer's view of any bert.heads task model: the objective of the family whose head
    it is (its `kind`, one of bert.heads.HEAD_KINDS)."""
    for candidate in FAMILIES:
        if model.kind in candidate.head_kinds:
            return candidate.objective(model)
    raise ValueError(f"no fine-tuning objective for a {model.kind!r} head")
