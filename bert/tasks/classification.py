"""Sentence and sentence-pair classification and regression: the GLUE tasks and any table.

Each GLUE task is a `TaskSpec`: where its TSV files keep the text, the pair and the label (as
google-research/bert's run_classifier.py and the GLUE release lay them out), its label list in
the original order (the classifier's output ids), its metrics and the one that selects among
runs, and the leaderboard's file name. GLUE files are read with quoting off, because MNLI and
QQP sentences hold unbalanced quotes that a CSV reader would use to merge rows; rows too short
for the layout are skipped and counted, as the original processors drop QQP's broken rows.
`read_table` reads any CSV/TSV/JSONL file for the generic `classify` task.

Featurizing follows the original `convert_single_example`: [CLS] a [SEP] (b [SEP]), segment
ids 0 then 1, a pair truncated longest-first one token at a time. Metrics are numpy on the whole
dataset; loss sums are JAX, weighted by the batcher's `example_weights`. The `Classification`
family (bert/tasks/family.py) wires them into bert.finetune for every GLUE task and `classify`.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from bert import files, heads
from bert.files import json_object, write_atomically
from bert.model import BertConfig
from bert.objectives import cross_entropy
from bert.tasks import SkipCount, TaskDataError
from bert.tasks.family import FineTuneTask, Family, Split, check
from bert.tokenizer import Tokenizer

Array = jax.Array
SPLITS = ("train", "dev", "test")


@dataclasses.dataclass(frozen=True)
class Example:
    """One sentence or sentence pair; `label` is None in test files."""

    guid: str  # the file's index column, else the 0-based data row; the submission's index
    text_a: str
    text_b: str | None
    label: str | None  # a label string, or the score's text for regression


@dataclasses.dataclass(frozen=True)
class TsvLayout:
    """Where one split of a GLUE task keeps its fields: 0-based columns, -1 for the last."""

    text_a: int
    text_b: int | None = None
    label: int | None = None  # None: an unlabelled (test) file
    index: int | None = None  # None: the 0-based data row is the index
    header: bool = True

    @property
    def min_columns(self) -> int:
        """Fields a row needs; a last-column label must not be one of the text columns."""
        used = [c for c in (self.text_a, self.text_b, self.label, self.index) if c is not None]
        return max(c for c in used if c >= 0) + 1 + (self.label == -1)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A sentence(-pair) task: its files' layouts, labels, metrics and submission file."""

    name: str
    labels: tuple[str, ...]  # the classifier's output order; () for regression
    train: TsvLayout | None
    dev: TsvLayout | None
    test: TsvLayout | None
    metrics: tuple[str, ...]
    selection_metric: str  # the metric that picks among runs and checkpoints on dev
    submission_file: str  # the leaderboard's name for the test predictions
    mismatched_submission_file: str | None = None  # MNLI's second test set

    @property
    def regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        """Outputs of the head: one score for regression."""
        return len(self.labels) or 1

    def layout(self, split: str) -> TsvLayout:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        layout = getattr(self, split)
        if layout is None:
            raise ValueError(f"task {self.name} has no {split} file")
        return layout


_BINARY = ("0", "1")
_NLI = ("contradiction", "entailment", "neutral")
_ENTAILMENT = ("entailment", "not_entailment")
# Most GLUE pair files: index, sentence1, sentence2, ..., label last; test without the label.
_INDEXED_PAIR = TsvLayout(text_a=1, text_b=2, label=-1, index=0)
_INDEXED_PAIR_TEST = TsvLayout(text_a=1, text_b=2, index=0)

# The paper reports F1 for MRPC and QQP, Spearman for STS-B, Matthews' correlation for CoLA (as
# GLUE does) and accuracy elsewhere; those select. AX is MNLI's model on the diagnostic set,
# scored by GLUE with R3, the multi-class Matthews' correlation.
GLUE_TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("cola", _BINARY,
             train=TsvLayout(text_a=3, label=1, header=False),
             dev=TsvLayout(text_a=3, label=1, header=False),
             test=TsvLayout(text_a=1, index=0),
             metrics=("matthews_corr", "accuracy"), selection_metric="matthews_corr",
             submission_file="CoLA.tsv"),
    TaskSpec("sst2", _BINARY,
             train=TsvLayout(text_a=0, label=1), dev=TsvLayout(text_a=0, label=1),
             test=TsvLayout(text_a=1, index=0),
             metrics=("accuracy",), selection_metric="accuracy", submission_file="SST-2.tsv"),
    TaskSpec("mrpc", _BINARY,
             train=TsvLayout(text_a=3, text_b=4, label=0),
             dev=TsvLayout(text_a=3, text_b=4, label=0),
             test=TsvLayout(text_a=3, text_b=4, index=0),
             metrics=("accuracy", "f1"), selection_metric="f1", submission_file="MRPC.tsv"),
    TaskSpec("qqp", _BINARY,
             train=TsvLayout(text_a=3, text_b=4, label=5, index=0),
             dev=TsvLayout(text_a=3, text_b=4, label=5, index=0),
             test=_INDEXED_PAIR_TEST,
             metrics=("accuracy", "f1"), selection_metric="f1", submission_file="QQP.tsv"),
    TaskSpec("stsb", (),
             train=TsvLayout(text_a=7, text_b=8, label=-1, index=0),
             dev=TsvLayout(text_a=7, text_b=8, label=-1, index=0),
             test=TsvLayout(text_a=7, text_b=8, index=0),
             metrics=("pearson", "spearman"), selection_metric="spearman",
             submission_file="STS-B.tsv"),
    TaskSpec("mnli", _NLI,
             train=TsvLayout(text_a=8, text_b=9, label=-1, index=0),
             dev=TsvLayout(text_a=8, text_b=9, label=-1, index=0),
             test=TsvLayout(text_a=8, text_b=9, index=0),
             metrics=("accuracy",), selection_metric="accuracy", submission_file="MNLI-m.tsv",
             mismatched_submission_file="MNLI-mm.tsv"),
    TaskSpec("qnli", _ENTAILMENT, train=_INDEXED_PAIR, dev=_INDEXED_PAIR, test=_INDEXED_PAIR_TEST,
             metrics=("accuracy",), selection_metric="accuracy", submission_file="QNLI.tsv"),
    TaskSpec("rte", _ENTAILMENT, train=_INDEXED_PAIR, dev=_INDEXED_PAIR, test=_INDEXED_PAIR_TEST,
             metrics=("accuracy",), selection_metric="accuracy", submission_file="RTE.tsv"),
    TaskSpec("wnli", _BINARY, train=_INDEXED_PAIR, dev=_INDEXED_PAIR, test=_INDEXED_PAIR_TEST,
             metrics=("accuracy",), selection_metric="accuracy", submission_file="WNLI.tsv"),
    # dev: diagnostic-full.tsv (categories, Domain, Premise, Hypothesis, Label); test: diagnostic.tsv.
    TaskSpec("ax", _NLI, train=None,
             dev=TsvLayout(text_a=5, text_b=6, label=7),
             test=_INDEXED_PAIR_TEST,
             metrics=("matthews_corr", "accuracy"), selection_metric="matthews_corr",
             submission_file="AX.tsv"),
)}


def glue_task(name: str) -> TaskSpec:
    """The spec of a GLUE task by its config name (sst2, cola, mrpc, ..., ax)."""
    try:
        return GLUE_TASKS[name]
    except KeyError:
        raise ValueError(f"unknown GLUE task {name!r}; known: {sorted(GLUE_TASKS)}") from None


def table_task(labels: Sequence[str], *, regression: bool = False,
               name: str = "classify") -> TaskSpec:
    """A spec for the generic `classify` task: accuracy (plus f1 and Matthews' correlation
    of class 1 when binary), or Pearson and Spearman for regression."""
    if regression:
        return TaskSpec(name, (), None, None, None, metrics=("pearson", "spearman"),
                        selection_metric="spearman", submission_file=f"{name}.tsv")
    if len(labels) < 2:
        raise ValueError(f"a classification task needs at least 2 labels, got {list(labels)}")
    metrics = ("accuracy", "f1", "matthews_corr") if len(labels) == 2 else ("accuracy",)
    return TaskSpec(name, tuple(labels), None, None, None, metrics=metrics,
                    selection_metric="accuracy", submission_file=f"{name}.tsv")


# ---------------------------------------------------------------------------------- readers


def _check_label(value: str, labels: Sequence[str], regression: bool, where: str) -> None:
    """Raises naming `where` (file:line: field) unless `value` is a label (or a number)."""
    if regression:
        try:
            finite = math.isfinite(float(value))
        except ValueError:
            raise TaskDataError(f"{where} is {value!r}, not a number") from None
        if not finite:
            raise TaskDataError(f"{where} is {value!r}, not a finite number")
    elif value not in labels:
        raise TaskDataError(f"{where} is {value!r}, not one of the labels {list(labels)}")


def text_lines(path: str | Path, encoding: str) -> Iterator[str]:
    """Lines of a text file, with a missing file or a wrong encoding said as TaskDataError
    (file, line and byte offset). A UTF-8 byte-order mark, which spreadsheet programs and
    Windows editors write, is dropped; lines keep their ends (CRLF too: csv and str.split
    take both)."""
    if not Path(path).is_file():
        raise TaskDataError(f"{path}: no such file")
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    with open(path, encoding=codec, newline="") as f:
        try:
            yield from f
        except UnicodeDecodeError:
            data = Path(path).read_bytes()
            try:
                data.decode(codec)
            except UnicodeDecodeError as err:
                raise TaskDataError(f"{files.decode_error(path, data, err, encoding)}: "
                                    f"{err.reason}; set the file's encoding") from None
            raise


def read_glue(path: str | Path, task: str | TaskSpec, split: str
              ) -> tuple[list[Example], SkipCount]:
    """Examples of one GLUE TSV file, and how many rows were too short and skipped.

    `split` is "train", "dev" or "test" (MNLI's matched and mismatched files share one layout;
    AX's dev file is diagnostic-full.tsv, its test file diagnostic.tsv). An unknown label stops
    with the file, line and column.
    """
    spec = glue_task(task) if isinstance(task, str) else task
    layout = spec.layout(split)
    examples: list[Example] = []
    skipped = 0
    rows = csv.reader(text_lines(path, "utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row_number, row in enumerate(rows, start=-1 if layout.header else 0):
        if row_number < 0:
            continue
        if len(row) < layout.min_columns:
            if not skipped:
                first_short = (rows.line_num, len(row))
            skipped += 1
            continue
        label = None
        if layout.label is not None:
            label = row[layout.label]
            column = layout.label % len(row) + 1
            _check_label(label, spec.labels, spec.regression,
                         f"{path}:{rows.line_num}: label (column {column})")
        examples.append(Example(
            guid=row[layout.index] if layout.index is not None else str(row_number),
            text_a=row[layout.text_a],
            text_b=row[layout.text_b] if layout.text_b is not None else None,
            label=label,
        ))
    if not skipped:
        return examples, SkipCount()
    line, fields = first_short
    return examples, SkipCount(skipped, (
        f"rows with fewer than the {layout.min_columns} tab-separated fields of the {spec.name} "
        f"{split} layout (first: {path}:{line}, {fields} field{'s' * (fields != 1)}); is this "
        f"the {spec.name} {split} file?"))


ColumnKey = str | int
_QUOTING = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def _table_records(path: str | Path, file_format: str, encoding: str, delimiter: str,
                   quoting: str, header: bool) -> Iterator[tuple[int, dict[ColumnKey, Any]]]:
    """(line, fields by column name and by position) for each non-blank record."""
    lines = text_lines(path, encoding)
    if file_format == "jsonl":
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            yield line_number, json_object(line, path, TaskDataError, line=line_number)
        return
    if quoting not in _QUOTING:
        raise ValueError(f"quoting must be one of {sorted(_QUOTING)}, got {quoting!r}")
    rows = csv.reader(lines, delimiter=delimiter, quoting=_QUOTING[quoting])
    names: list[str] | None = None
    for row in rows:
        if not row:
            continue
        if header and names is None:
            names = row
            continue
        record: dict[ColumnKey, Any] = dict(enumerate(row))
        record.update(zip(names or (), row))
        yield rows.line_num, record


def _field(record: Mapping[ColumnKey, Any], key: ColumnKey, role: str, where: str) -> str:
    """The text of one field; JSON numbers are accepted as labels and indices."""
    if key not in record:
        names = [name for name in record if isinstance(name, str)]
        found = f" (its fields: {', '.join(map(repr, names))})" if names else ""
        raise TaskDataError(f"{where}: no {role} field {key!r}{found}")
    value = record[key]
    if role != "text" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TaskDataError(f"{where}: {role} field {key!r} is {value!r}, not a string")
    return value


def read_table(
    path: str | Path,
    *,
    text: ColumnKey,
    pair: ColumnKey | None = None,
    label: ColumnKey | None = None,
    index: ColumnKey | None = None,
    labels: Sequence[str] | None = None,
    regression: bool = False,
    file_format: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    quoting: str | None = None,
    header: bool = True,
) -> list[Example]:
    """Examples of a CSV, TSV or JSONL file for the generic `classify` task.

    Columns are named (header or JSON keys) or 0-based positions; `label=None` reads an
    unlabelled file. `file_format` defaults from the suffix (.csv, .tsv/.txt, .jsonl/.json),
    `delimiter` from the format; `quoting` is "minimal" (standard CSV quotes, the default for
    CSV) or "none" (quotes are text, the default for TSV, whose text often has stray quotes).
    With `labels`, each label must be one of them; with `regression`, a number. A missing
    field, a non-text value or a bad label stops with the file, line and field.
    """
    if file_format is None:
        file_format = _FORMATS.get(Path(path).suffix.lower(), "")
    if file_format not in ("csv", "tsv", "jsonl"):
        raise ValueError(f"{path}: file_format must be csv, tsv or jsonl, got {file_format!r}")
    for role, key in (("text", text), ("pair", pair), ("label", label), ("index", index)):
        if isinstance(key, str) and file_format != "jsonl" and not header:
            raise ValueError(f"{role} column {key!r} is a name, but {path} has no header; "
                             "give a 0-based position")
        if isinstance(key, int) and file_format == "jsonl":
            raise ValueError(f"{role} column {key} is a position; JSONL fields need names")
    delimiter = delimiter or ("," if file_format == "csv" else "\t")
    quoting = quoting or ("minimal" if file_format == "csv" else "none")
    examples = []
    records = _table_records(path, file_format, encoding, delimiter, quoting, header)
    for row_number, (line, record) in enumerate(records):
        where = f"{path}:{line}"
        value = None
        if label is not None:
            value = _field(record, label, "label", where)
            if labels is not None or regression:
                _check_label(value, labels or (), regression, f"{where}: label field {label!r}")
        examples.append(Example(
            guid=_field(record, index, "index", where) if index is not None else str(row_number),
            text_a=_field(record, text, "text", where),
            text_b=_field(record, pair, "text", where) if pair is not None else None,
            label=value,
        ))
    return examples


def infer_labels(examples: Sequence[Example]) -> tuple[str, ...]:
    """The sorted distinct labels of (training) examples; numerically when all are integers,
    so "2" precedes "10"."""
    found = {e.label for e in examples if e.label is not None}
    if all(v.lstrip("-").isdigit() for v in found):
        return tuple(sorted(found, key=int))
    return tuple(sorted(found))


# ------------------------------------------------------------------------------- featurizing


def truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int) -> None:
    """Shortens the pair in place to `max_tokens` in all, one token at a time from the end of
    the longer sequence (of the second on ties), as the original `_truncate_seq_pair`."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def pack_sequence(tokens_a: list[int], tokens_b: list[int] | None, tokenizer: Tokenizer,
                  max_seq_len: int) -> tuple[list[int], list[int]]:
    """Ids and segment ids of [CLS] a [SEP] (b [SEP]), truncated to `max_seq_len` tokens."""
    tokens_a = list(tokens_a)
    if tokens_b is None:
        ids = [tokenizer.cls_id, *tokens_a[: max_seq_len - 2], tokenizer.sep_id]
        return ids, [0] * len(ids)
    tokens_b = list(tokens_b)
    truncate_pair(tokens_a, tokens_b, max_seq_len - 3)
    ids = [tokenizer.cls_id, *tokens_a, tokenizer.sep_id, *tokens_b, tokenizer.sep_id]
    return ids, [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)


def token_arrays(ids: Sequence[Sequence[int]], segment_ids: Sequence[Sequence[int]],
                 max_seq_len: int) -> dict[str, np.ndarray]:
    """input_ids, segment_ids, input_mask as int32 [N, max_seq_len], padded with 0."""
    shape = (len(ids), max_seq_len)
    arrays = {key: np.zeros(shape, np.int32) for key in ("input_ids", "segment_ids", "input_mask")}
    for row, (row_ids, row_segments) in enumerate(zip(ids, segment_ids, strict=True)):
        if len(row_ids) > max_seq_len:
            raise ValueError(f"row {row} has {len(row_ids)} tokens, over max_seq_len={max_seq_len}")
        arrays["input_ids"][row, : len(row_ids)] = row_ids
        arrays["segment_ids"][row, : len(row_segments)] = row_segments
        arrays["input_mask"][row, : len(row_ids)] = 1
    return arrays


def featurize(examples: Sequence[Example], tokenizer: Tokenizer, max_seq_len: int,
              spec: TaskSpec) -> dict[str, np.ndarray]:
    """Model inputs [N, max_seq_len] and `label_ids` int32 [N] (or `label_values` float32 [N]
    for regression); unlabelled examples get label 0."""
    if max_seq_len < 3 + any(e.text_b is not None for e in examples):
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for text")
    tokens_a = tokenizer.encode_batch([e.text_a for e in examples])
    tokens_b = tokenizer.encode_batch([e.text_b or "" for e in examples])
    ids, segments = [], []
    for example, a, b in zip(examples, tokens_a, tokens_b):
        row_ids, row_segments = pack_sequence(a, b if example.text_b is not None else None,
                                              tokenizer, max_seq_len)
        ids.append(row_ids)
        segments.append(row_segments)
    features = token_arrays(ids, segments, max_seq_len)
    if spec.regression:
        features["label_values"] = np.array(
            [float(e.label) if e.label is not None else 0.0 for e in examples], np.float32)
        return features
    label_index = {label: i for i, label in enumerate(spec.labels)}
    label_ids = np.zeros(len(examples), np.int32)
    for row, example in enumerate(examples):
        if example.label is None:
            continue
        if example.label not in label_index:
            raise TaskDataError(f"example {example.guid}: label {example.label!r} is not one of "
                                f"{list(spec.labels)} (labels inferred from the training file?)")
        label_ids[row] = label_index[example.label]
    features["label_ids"] = label_ids
    return features


# --------------------------------------------------------------------------------- loss sums


def cross_entropy_sums(logits: Array, labels: Array, weights: Array) -> dict[str, Array]:
    """Weighted sums of the float32 cross-entropy and of argmax hits; `count` = sum of weights.

    logits (..., K), labels and weights (...): one row per example, token or question.
    """
    weights = weights.astype(jnp.float32)
    nll, correct = cross_entropy(logits, labels.astype(jnp.int32))
    return dict(loss_sum=jnp.sum(nll * weights), correct=jnp.sum(correct * weights),
                count=jnp.sum(weights))


def classification_loss_sums(outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Cross-entropy sums of logits (B, num_labels) against `label_ids`, per real example."""
    return cross_entropy_sums(outputs, batch["label_ids"], batch["example_weights"])


def regression_loss_sums(outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Squared-error sums of scores (B, 1) or (B,) against `label_values` (the loss is MSE)."""
    scores = outputs.reshape(outputs.shape[0]).astype(jnp.float32)
    weights = batch["example_weights"].astype(jnp.float32)
    squared_error = jnp.square(scores - batch["label_values"].astype(jnp.float32))
    return dict(loss_sum=jnp.sum(squared_error * weights), count=jnp.sum(weights))


# ----------------------------------------------------------------------------------- metrics


def _checked(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or not len(labels):
        raise ValueError(f"metrics need two equal non-empty vectors, got shapes "
                         f"{predictions.shape} and {labels.shape}")
    return predictions, labels


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    predictions, labels = _checked(predictions, labels)
    return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of class 1; 0.0 when neither predictions nor labels contain it."""
    predictions, labels = _checked(predictions, labels)
    true_positives = np.sum((predictions == 1) & (labels == 1))
    denominator = np.sum(predictions == 1) + np.sum(labels == 1)
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_corr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews' correlation (the multi-class R_K for more than two classes); 0.0 when the
    predictions or the labels are constant, where it is undefined."""
    predictions, labels = _checked(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    k = len(classes)
    confusion = np.zeros((k, k), np.float64)
    np.add.at(confusion, (encoded[: len(labels)], encoded[len(labels):]), 1)
    true_sums, predicted_sums = confusion.sum(axis=1), confusion.sum(axis=0)
    n = len(labels)
    covariance = np.trace(confusion) * n - true_sums @ predicted_sums
    variance_product = (n * n - predicted_sums @ predicted_sums) * (n * n - true_sums @ true_sums)
    return float(covariance / np.sqrt(variance_product)) if variance_product else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson's r; 0.0 when either side is constant, where it is undefined."""
    predictions, labels = _checked(predictions, labels)
    x = predictions.astype(np.float64) - np.mean(predictions, dtype=np.float64)
    y = labels.astype(np.float64) - np.mean(labels, dtype=np.float64)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.clip(np.sum(x * y) / denominator, -1.0, 1.0)) if denominator else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (scipy's rankdata "average")."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(values)]]) - 1
    ranks = np.empty(len(values), np.float64)
    ranks[order] = (first[group] + last[group]) / 2 + 1
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman's rho (Pearson's r of average ranks); 0.0 when either side is constant."""
    predictions, labels = _checked(predictions, labels)
    return pearson(_average_ranks(predictions), _average_ranks(labels))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy, "f1": f1, "matthews_corr": matthews_corr,
    "pearson": pearson, "spearman": spearman,
}


def predictions_from_outputs(outputs: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Label ids (argmax of logits [N, K]) or scores [N] from the head's outputs."""
    outputs = np.asarray(outputs)
    if spec.regression:
        return outputs.reshape(outputs.shape[0]).astype(np.float32)
    return np.argmax(outputs, axis=-1).astype(np.int32)


def compute_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray, *,
                    mismatched: bool = False) -> dict[str, float]:
    """The task's metrics of predicted against gold label ids (or scores), as plain floats;
    `mismatched` names them with an "_mm" suffix (MNLI's mismatched dev file)."""
    suffix = "_mm" if mismatched else ""
    return {name + suffix: METRICS[name](predictions, labels) for name in spec.metrics}


# ------------------------------------------------------------------------------- submissions


def submission_file(spec: TaskSpec, *, mismatched: bool = False) -> str:
    """The leaderboard's file name for the task's test predictions (MNLI-mm.tsv if mismatched)."""
    if mismatched:
        if spec.mismatched_submission_file is None:
            raise ValueError(f"task {spec.name} has no mismatched test set")
        return spec.mismatched_submission_file
    return spec.submission_file


def write_predictions(path: str | Path, spec: TaskSpec, examples: Sequence[Example],
                      predictions: np.ndarray) -> None:
    """A GLUE submission TSV: header `index\\tprediction`, then each example's index and its
    label string (e.g. "entailment", "1") or, for regression, its score with 3 decimals."""
    predictions = np.asarray(predictions)
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if spec.regression:
        values = [f"{float(p):.3f}" for p in predictions]
    else:
        values = [spec.labels[int(p)] for p in predictions]
    lines = ["index\tprediction"] + [f"{e.guid}\t{v}" for e, v in zip(examples, values)]
    write_atomically(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------- the family


def _logits(logits: Array) -> dict[str, Array]:
    return {"logits": logits}


class Classification(Family):
    """GLUE tasks by name, and `classify` (any CSV/TSV/JSONL, columns from config.reader)."""

    task_names = (*(name for name in GLUE_TASKS if name != "ax"), "classify")
    head_kinds = ("sequence_classification", "regression")

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer, pretrained)
        if config.task == "classify":
            reader = config.reader
            labels = tuple(x for x in reader.labels.split(",") if x) if reader.labels else ()
            self.spec = table_task(labels, regression=reader.regression) \
                if labels or reader.regression else None
        else:
            self.spec = glue_task(config.task)

    @classmethod
    def validate(cls, config: ConfigDict) -> None:
        check(config.reader.quoting in ("", "minimal", "none"), "reader.quoting",
              f"must be '', 'minimal' or 'none', got {config.reader.quoting!r}")

    @classmethod
    def objective(cls, model: nn.Module) -> FineTuneTask:
        """Cross-entropy over the labels; squared error for a regression head (one score)."""
        if model.kind == "regression":
            return FineTuneTask(model, loss_sums=regression_loss_sums,
                                sum_keys=("loss_sum", "count"), predictions=_logits)
        return FineTuneTask(model, loss_sums=classification_loss_sums,
                            sum_keys=("loss_sum", "correct", "count"), predictions=_logits)

    @property
    def selection_metric(self) -> str:
        return self.spec.selection_metric

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def set_labels(self, train_path: str) -> None:
        if self.spec is None:  # classify without config.reader.labels: sorted from train
            examples = self._read(train_path, "train", labels=None)
            labels = infer_labels(examples)
            if len(labels) < 2:
                column = self.config.reader.label_column
                raise TaskDataError(
                    f"{train_path}: " + (f"the label column {column!r} holds only {list(labels)}; "
                                         "a classifier needs at least 2 labels (or set "
                                         "config.reader.regression)" if examples else
                                         "no examples (the file is empty or has only a header)"))
            self.spec = table_task(labels)

    def _read(self, path: str, split: str, labels: Sequence[str] | None) -> list[Any]:
        if self.config.task != "classify":
            examples, _ = read_glue(path, self.spec, split)
            return examples
        r = self.config.reader
        column = lambda value: int(value) if str(value).lstrip("-").isdigit() else value  # noqa: E731
        return read_table(
            path, text=column(r.text_column), pair=column(r.pair_column) if r.pair_column else None,
            label=None if split == "test" else column(r.label_column),
            index=column(r.index_column) if r.index_column else None,
            labels=labels, regression=r.regression, file_format=r.format or None,
            encoding=r.encoding, delimiter=r.delimiter or None, quoting=r.quoting or None,
            header=r.header)

    def load(self, name: str, path: str) -> Split:
        split = "test" if name.startswith("test") else "dev" if name.startswith("eval") else "train"
        skipped = 0
        if self.config.task == "classify":
            examples = self._read(path, split, self.spec.labels or None)
        else:
            examples, skipped = read_glue(path, self.spec, split)
        features = featurize(examples, self.tokenizer, self.config.max_seq_len, self.spec)
        return Split(name, path, examples, features, skipped=skipped)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForSequenceClassification(bert_config, self.spec.num_labels)

    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        predicted = predictions_from_outputs(predictions["logits"], self.spec)
        gold = split.features["label_values" if self.spec.regression else "label_ids"]
        return compute_metrics(self.spec, predicted, gold,
                               mismatched=split.name == "eval_mismatched")

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        predicted = predictions_from_outputs(predictions["logits"], self.spec)
        names = [f"{split.name}_predictions.tsv"]
        if split.name.startswith("test") and self.config.task != "classify":
            # The same file under the leaderboard's name (MNLI-m.tsv, MNLI-mm.tsv, ...).
            names.append(submission_file(self.spec, mismatched=split.name == "test_mismatched"))
        paths = [os.path.join(directory, name) for name in names]
        for path in paths:
            write_predictions(path, self.spec, split.examples, predicted)
        return paths
