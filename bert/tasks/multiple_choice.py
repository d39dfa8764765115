"""Multiple choice (SWAG): one score per candidate ending, a softmax over the candidates.

SWAG's official CSV files (train.csv, val.csv, test.csv) have a header naming the columns: an
unnamed row index, video-id, fold-ind, startphrase, sent1, sent2, gold-source, ending0..ending3
and, except in test.csv, label (0-3). As in the paper, each choice is a sentence pair: A is
sent1, B is sent2 followed by the ending, packed and truncated like a classification pair.
The `MultipleChoice` family (bert/tasks/family.py) wires them into bert.finetune for `swag`.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from bert import heads
from bert.files import write_atomically
from bert.model import BertConfig
from bert.tasks import TaskDataError
from bert.tasks.classification import (accuracy, cross_entropy_sums, pack_sequence, text_lines,
                                       token_arrays)
from bert.tasks.family import FineTuneTask, Family, Split
from bert.tokenizer import Tokenizer

Array = jax.Array
ENDINGS = ("ending0", "ending1", "ending2", "ending3")
_REQUIRED = ("sent1", "sent2", *ENDINGS)


@dataclasses.dataclass(frozen=True)
class Question:
    """A context and its candidate endings; `label` (the right ending) is None in test files."""

    id: str  # the file's unnamed index column, else the 0-based data row
    context: str  # sent1: sentence A of every choice
    start: str  # sent2: the beginning of sentence B, which each ending completes
    endings: tuple[str, ...]
    label: int | None


def read_swag(path: str | Path) -> list[Question]:
    """Questions of a SWAG CSV file; a missing column or a label that is not 0-3 stops with
    the file, line and field."""
    rows = csv.reader(text_lines(path, "utf-8"))
    header = next(rows, None)
    if header is None:
        raise TaskDataError(f"{path}: empty file; expected a SWAG CSV header")
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise TaskDataError(f"{path}:1: no column {', '.join(missing)} in the header {header}")
    column = {name: i for i, name in enumerate(header)}
    questions = []
    for row_number, row in enumerate(rows):
        if len(row) != len(header):
            raise TaskDataError(f"{path}:{rows.line_num}: {len(row)} fields, the header has "
                                f"{len(header)}")
        label = None
        if "label" in column:
            value = row[column["label"]]
            if value not in {str(i) for i in range(len(ENDINGS))}:
                raise TaskDataError(f"{path}:{rows.line_num}: label is {value!r}, not 0-"
                                    f"{len(ENDINGS) - 1}")
            label = int(value)
        questions.append(Question(
            id=row[column[""]] if "" in column else str(row_number),
            context=row[column["sent1"]],
            start=row[column["sent2"]],
            endings=tuple(row[column[name]] for name in ENDINGS),
            label=label,
        ))
    return questions


def featurize(questions: Sequence[Question], tokenizer: Tokenizer,
              max_seq_len: int) -> dict[str, np.ndarray]:
    """Model inputs [N, C, max_seq_len], one [CLS] context [SEP] start ending [SEP] row per
    choice, and `label_ids` int32 [N] (0 for unlabelled questions)."""
    if max_seq_len < 4:
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for text")
    num_choices = len(ENDINGS)
    contexts = tokenizer.encode_batch([q.context for q in questions])
    continuations = tokenizer.encode_batch([" ".join(filter(None, (q.start, ending)))
                                            for q in questions for ending in q.endings])
    ids, segments = [], []
    for index, context in enumerate(contexts):
        for choice in range(num_choices):
            row_ids, row_segments = pack_sequence(
                context, continuations[index * num_choices + choice], tokenizer, max_seq_len)
            ids.append(row_ids)
            segments.append(row_segments)
    features = {key: array.reshape(len(questions), num_choices, max_seq_len)
                for key, array in token_arrays(ids, segments, max_seq_len).items()}
    features["label_ids"] = np.array([q.label or 0 for q in questions], np.int32)
    return features


def loss_sums(outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Cross-entropy sums over the choice scores (B, C) or (B, C, 1), per real question."""
    scores = outputs.reshape(outputs.shape[0], -1)
    return cross_entropy_sums(scores, batch["label_ids"], batch["example_weights"])


def predictions_from_outputs(outputs: np.ndarray) -> np.ndarray:
    """The chosen ending of each question: argmax of the scores [N, C] (or [N, C, 1])."""
    outputs = np.asarray(outputs)
    return np.argmax(outputs.reshape(outputs.shape[0], -1), axis=-1).astype(np.int32)


def compute_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """SWAG's metric, accuracy (0-1)."""
    return {"accuracy": accuracy(predictions, labels)}


def write_predictions(path: str | Path, questions: Sequence[Question],
                      predictions: np.ndarray) -> None:
    """A CSV with header `id,label`: each question's id and the index of its chosen ending."""
    if len(predictions) != len(questions):
        raise ValueError(f"{len(predictions)} predictions for {len(questions)} questions")
    lines = ["id,label"] + [f"{q.id},{int(p)}" for q, p in zip(questions, predictions)]
    write_atomically(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------- the family


class MultipleChoice(Family):
    """`swag`: one score per choice, softmax over the choices."""

    task_names = ("swag",)
    head_kinds = ("multiple_choice",)
    selection_metric = "accuracy"

    @classmethod
    def objective(cls, model: nn.Module) -> FineTuneTask:
        return FineTuneTask(model, loss_sums=loss_sums, sum_keys=("loss_sum", "correct", "count"),
                            predictions=lambda scores: {"scores": scores}, choices=len(ENDINGS))

    def load(self, name: str, path: str) -> Split:
        questions = read_swag(path)
        features = featurize(questions, self.tokenizer, self.config.max_seq_len)
        return Split(name, path, questions, features)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForMultipleChoice(bert_config)

    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        predicted = predictions_from_outputs(predictions["scores"])
        return compute_metrics(predicted, split.features["label_ids"])

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        path = os.path.join(directory, f"{split.name}_predictions.csv")
        write_predictions(path, split.examples, predictions_from_outputs(predictions["scores"]))
        return [path]
