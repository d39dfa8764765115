"""The fine-tuning families behind `config.task`, as the one trainer and bert.finetune see them.

A family turns files into features (bert/tasks/<family>.py owns the reader, the featurizer, the
loss sums, the metrics and the prediction files) and says which head the encoder gets. Here each
is wrapped as a `Family`: load a split, build the model and its `train.Task`, score and write
predictions. Adding a task is adding a family, never a training loop.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from bert import heads, train
from bert.model import BertConfig
from bert.tasks import (SkipCount, TaskDataError, classification, feature_probe,
                        multiple_choice, squad, tagging)
from bert.tokenizer import Tokenizer

Array = jax.Array
Batch = Mapping[str, Array]

GLUE_TASKS = tuple(name for name in classification.GLUE_TASKS if name != "ax")
TASK_NAMES = (*GLUE_TASKS, "classify", "squad_v1", "squad_v2", "ner", "tag", "swag",
              "ner_features")


class FineTuneTask(train.Task):
    """A task model whose loss is loss_sum / count, both summed over the global batch."""

    model_input_keys = ("input_ids", "segment_ids", "input_mask")

    def __init__(self, model: nn.Module, *, loss_sums: Callable[[Any, Batch], dict[str, Array]],
                 sum_keys: tuple[str, ...], count: Callable[[Batch], Array],
                 predictions: Callable[[Any], dict[str, Array]], choices: int = 0,
                 inputs: Mapping[str, Array] | None = None) -> None:
        """`inputs`: init inputs of a model that takes other inputs than token ids; their keys
        become the batch fields passed to the model."""
        self.model = model
        self._loss_sums = loss_sums
        self.sum_keys = sum_keys
        self._count = count
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


def _examples_count(batch: Batch) -> Array:
    return jnp.sum(batch["example_weights"].astype(jnp.float32))


def _labelled_tokens(batch: Batch) -> Array:
    return jnp.sum(batch["label_weights"] * batch["example_weights"][:, None])


def token_task(model: nn.Module, inputs: Mapping[str, Array] | None = None) -> FineTuneTask:
    """Cross-entropy over the labelled positions (label_weights) of real rows; label ids out."""
    return FineTuneTask(
        model, loss_sums=tagging.loss_sums, sum_keys=("loss_sum", "correct", "count"),
        count=_labelled_tokens,
        predictions=lambda logits: {"label_ids": jnp.argmax(logits, -1).astype(jnp.int32)},
        inputs=inputs)


def head_task(model: nn.Module) -> FineTuneTask:
    """The objective of a bert.heads model, by its kind: cross-entropy over labels (regression:
    squared error), over first sub-tokens (tagging), (start + end) / 2 (spans), over choices."""
    kind = model.kind
    if kind == "sequence_classification":
        return FineTuneTask(model, loss_sums=classification.classification_loss_sums,
                            sum_keys=("loss_sum", "correct", "count"), count=_examples_count,
                            predictions=lambda logits: {"logits": logits})
    if kind == "regression":
        return FineTuneTask(model, loss_sums=classification.regression_loss_sums,
                            sum_keys=("loss_sum", "count"), count=_examples_count,
                            predictions=lambda logits: {"logits": logits})
    if kind == "token_classification":
        return token_task(model)
    if kind == "question_answering":
        return FineTuneTask(
            model, loss_sums=squad.loss_sums,
            sum_keys=("loss_sum", "count", "start_correct", "end_correct"), count=_examples_count,
            predictions=lambda logits: {"start_logits": logits[0], "end_logits": logits[1]})
    if kind == "multiple_choice":
        return FineTuneTask(
            model, loss_sums=multiple_choice.loss_sums, sum_keys=("loss_sum", "correct", "count"),
            count=_examples_count, predictions=lambda scores: {"scores": scores},
            choices=len(multiple_choice.ENDINGS))
    raise ValueError(f"no fine-tuning objective for a {kind!r} head")


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


class Family:
    """What bert.finetune needs from a task family."""

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        """`pretrained`: the model config.init_checkpoint names, when the caller has it open."""
        self.config = config
        self.tokenizer = tokenizer
        self.pretrained = pretrained

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
        """The trainer's view of `model`: a bert.heads model's objective by default."""
        return head_task(model)

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


# ----------------------------------------------------------------------- sentence (pair) tasks


class Classification(Family):
    """GLUE tasks by name, and `classify` (any CSV/TSV/JSONL, columns from config.reader)."""

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer, pretrained)
        if config.task == "classify":
            reader = config.reader
            labels = tuple(x for x in reader.labels.split(",") if x) if reader.labels else ()
            self.spec = classification.table_task(labels, regression=reader.regression) \
                if labels or reader.regression else None
        else:
            self.spec = classification.glue_task(config.task)

    @property
    def selection_metric(self) -> str:
        return self.spec.selection_metric

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def set_labels(self, train_path: str) -> None:
        if self.spec is None:  # classify without config.reader.labels: sorted from train
            examples = self._read(train_path, "train", labels=None)
            labels = classification.infer_labels(examples)
            if len(labels) < 2:
                column = self.config.reader.label_column
                raise TaskDataError(
                    f"{train_path}: " + (f"the label column {column!r} holds only {list(labels)}; "
                                         "a classifier needs at least 2 labels (or set "
                                         "config.reader.regression)" if examples else
                                         "no examples (the file is empty or has only a header)"))
            self.spec = classification.table_task(labels)

    def _read(self, path: str, split: str, labels: Sequence[str] | None) -> list[Any]:
        if self.config.task != "classify":
            examples, _ = classification.read_glue(path, self.spec, split)
            return examples
        r = self.config.reader
        column = lambda value: int(value) if str(value).lstrip("-").isdigit() else value  # noqa: E731
        return classification.read_table(
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
            examples, skipped = classification.read_glue(path, self.spec, split)
        features = classification.featurize(examples, self.tokenizer, self.config.max_seq_len,
                                            self.spec)
        return Split(name, path, examples, features, skipped=skipped)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForSequenceClassification(bert_config, self.spec.num_labels)


    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        predicted = classification.predictions_from_outputs(predictions["logits"], self.spec)
        gold = split.features["label_values" if self.spec.regression else "label_ids"]
        return classification.compute_metrics(self.spec, predicted, gold,
                                              mismatched=split.name == "eval_mismatched")

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        predicted = classification.predictions_from_outputs(predictions["logits"], self.spec)
        names = [f"{split.name}_predictions.tsv"]
        if split.name.startswith("test") and self.config.task != "classify":
            # The same file under the leaderboard's name (MNLI-m.tsv, MNLI-mm.tsv, ...).
            names.append(classification.submission_file(
                self.spec, mismatched=split.name == "test_mismatched"))
        paths = [os.path.join(directory, name) for name in names]
        for path in paths:
            classification.write_predictions(path, self.spec, split.examples, predicted)
        return paths


# ----------------------------------------------------------------------------------- tagging


class Tagging(Family):
    """`ner` and `tag`: CoNLL columns, the first sub-token of each word labelled."""

    selection_metric = "f1"

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer, pretrained)
        self._labels: tuple[str, ...] = tuple(x for x in config.labels.split(",") if x)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def set_labels(self, train_path: str) -> None:
        if not self._labels:
            sentences = tagging.read_conll(train_path, encoding=self.config.reader.encoding)
            if not sentences:
                raise TaskDataError(f"{train_path}: no sentences (the file is empty or holds "
                                    "only -DOCSTART- lines)")
            self._labels = tagging.tag_labels(sentences)
            if len(self._labels) < 2:
                raise TaskDataError(f"{train_path}: every tag is O; name the entity tags with "
                                    "config.labels, or train on a file that has some")

    def load(self, name: str, path: str) -> Split:
        sentences = tagging.read_conll(path, labels=self._labels,
                                       encoding=self.config.reader.encoding)
        features, word_map = tagging.featurize(
            sentences, self.tokenizer, self.config.max_seq_len, self._labels,
            document_context=self.config.document_context)
        return Split(name, path, sentences, features, extra=word_map)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForTokenClassification(bert_config, len(self._labels))


    def _words(self, split: Split, predictions: Mapping[str, np.ndarray]) -> list[list[str]]:
        return tagging.word_predictions(predictions["label_ids"], split.extra, split.examples,
                                        self._labels)

    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        return tagging.entity_scores([s.tags for s in split.examples],
                                     self._words(split, predictions))

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        path = os.path.join(directory, f"{split.name}_predictions.conll")
        tagging.write_conll(path, split.examples, self._words(split, predictions))
        return [path]


class FeatureProbe(Tagging):
    """`ner_features`: the paper's feature-based NER (Table 7). Word vectors of the frozen
    encoder (cached, see bert/tasks/feature_probe.py) feed a BiLSTM tagger trained from scratch;
    one row per sentence, one column per word.

    The word axis is padded to config.max_seq_len (or the longest sentence, if longer), so the
    length buckets of bert/tasks/batches cut it as they cut a token axis.
    """

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer,
                         pretrained or heads.Pretrained.folder(config.init_checkpoint))
        if not config.feature_cache_dir:
            raise ValueError("config.feature_cache_dir is empty (bert.finetune sets it to "
                             "DIR/feature_cache)")
        self.encoder_config = dataclasses.replace(self.pretrained.config, dtype=config.dtype)
        self.strategy = feature_probe.strategy(config.feature_strategy,
                                               self.encoder_config.num_layers)

    @functools.cached_property
    def _encoder_params(self) -> Any:
        return self.pretrained.params()["bert"]

    def load(self, name: str, path: str) -> Split:
        c = self.config
        sentences = tagging.read_conll(path, labels=self._labels, encoding=c.reader.encoding)
        cached = feature_probe.cached_word_features(
            c.feature_cache_dir, c.init_checkpoint, path, sentences, self.tokenizer,
            self.encoder_config, self._encoder_params, encoding=c.reader.encoding,
            max_seq_len=int(c.max_seq_len), document_context=c.document_context,
            batch_size=int(c.batch_size))
        width = max([int(c.max_seq_len), *(len(s.words) for s in sentences)])
        features = feature_probe.word_rows(sentences, self._labels, width)
        features["word_features"] = feature_probe.LayerView(  # type: ignore[assignment]
            cached, self.strategy.first, self.strategy.end, width)
        return Split(name, path, sentences, features)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return feature_probe.BiLSTMTagger(
            len(self._labels), self.strategy.combine, self.strategy.num_layers,
            lstm_size=int(self.config.lstm_size), dropout_rate=float(self.config.dropout_rate))

    def task(self, model: nn.Module) -> FineTuneTask:
        shape = (1, 8, self.strategy.num_layers, self.encoder_config.hidden_size)
        return token_task(model, inputs=dict(word_features=jnp.zeros(shape, jnp.float32),
                                                input_mask=jnp.ones(shape[:2], jnp.int32)))

    def initial_params(self, source: str, model: nn.Module, rng: Array) -> tuple[Any, str]:
        return None, f"{self.strategy.name} features of the frozen encoder of {source}; " \
                     "tagger initialised fresh"

    def task_head(self, model: nn.Module) -> heads.TaskHead | None:
        return None

    def _words(self, split: Split, predictions: Mapping[str, np.ndarray]) -> list[list[str]]:
        return feature_probe.predicted_tags(predictions["label_ids"], split.examples,
                                            self._labels)


# -------------------------------------------------------------------------------------- SQuAD


class Squad(Family):
    """`squad_v1` and `squad_v2`: spans over doc_stride windows of the context."""

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer, pretrained)
        self.version_2 = config.task == "squad_v2"

    @property
    def selection_metric(self) -> str:
        return "f1"

    def load(self, name: str, path: str) -> Split:
        data = squad.read_squad(path, is_training=name == "train",
                                version_2_with_negative=self.version_2)
        features, windows = squad.featurize(
            data.examples, self.tokenizer, self.config.max_seq_len,
            doc_stride=self.config.doc_stride, max_query_length=self.config.max_query_length)
        return Split(name, path, data.examples, features, extra=windows, skipped=data.skipped)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForQuestionAnswering(bert_config)


    def _answers(self, split: Split, predictions: Mapping[str, np.ndarray]) -> Any:
        c = self.config
        return squad.postprocess(
            split.examples, split.extra, predictions["start_logits"], predictions["end_logits"],
            n_best_size=c.n_best_size, max_answer_length=c.max_answer_length,
            version_2_with_negative=self.version_2,
            null_score_diff_threshold=c.null_score_diff_threshold)

    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        return squad.evaluate(split.examples, self._answers(split, predictions),
                              version_2_with_negative=self.version_2)

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        path = os.path.join(directory, f"{split.name}_predictions.json")
        odds = path.replace(".json", ".null_odds.json") if self.version_2 else None
        nbest = path.replace(".json", ".nbest.json")
        squad.write_predictions(self._answers(split, predictions), path, null_odds_path=odds,
                                nbest_path=nbest)
        return [p for p in (path, odds, nbest) if p]


# --------------------------------------------------------------------------- multiple choice


class MultipleChoice(Family):
    """`swag`: one score per choice, softmax over the choices."""

    selection_metric = "accuracy"

    def load(self, name: str, path: str) -> Split:
        questions = multiple_choice.read_swag(path)
        features = multiple_choice.featurize(questions, self.tokenizer, self.config.max_seq_len)
        return Split(name, path, questions, features)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForMultipleChoice(bert_config)


    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        predicted = multiple_choice.predictions_from_outputs(predictions["scores"])
        return multiple_choice.compute_metrics(predicted, split.features["label_ids"])

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        path = os.path.join(directory, f"{split.name}_predictions.csv")
        multiple_choice.write_predictions(
            path, split.examples, multiple_choice.predictions_from_outputs(predictions["scores"]))
        return [path]


def family(config: ConfigDict, tokenizer: Tokenizer,
           pretrained: heads.Pretrained | None = None) -> Family:
    """The family of `config.task` (`pretrained`: config.init_checkpoint, opened)."""
    name = config.task
    if name in GLUE_TASKS or name == "classify":
        return Classification(config, tokenizer, pretrained)
    if name in ("ner", "tag"):
        return Tagging(config, tokenizer, pretrained)
    if name in ("squad_v1", "squad_v2"):
        return Squad(config, tokenizer, pretrained)
    if name == "swag":
        return MultipleChoice(config, tokenizer, pretrained)
    if name == "ner_features":
        return FeatureProbe(config, tokenizer, pretrained)
    raise ValueError(f"config.task={name!r} is not one of {', '.join(TASK_NAMES)}")
