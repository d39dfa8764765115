"""Token tagging (named entities) on CoNLL-column files, scored as conlleval scores it.

A CoNLL file has one token per line, the token first and its tag last (CoNLL-2003 puts POS and
chunk columns between them, WNUT none), a blank line after each sentence and `-DOCSTART-` lines
between documents. Tags are IOB1 (I- opens an entity unless it follows one of the same type)
or IOB2 (every entity opens with B-); both read, train and score alike.

As in the paper, each word is tokenized on its own and only its first sub-token carries a label
(`label_weights`); a word that tokenizes to nothing becomes [UNK] so it is still predicted. A
sentence longer than the window is split into consecutive chunks of whole words, and each chunk's
window is filled with the words around it, so every word is predicted exactly once and with
context. With `document_context` (the paper's CoNLL-2003 setup) a sentence's window is filled
with the neighbouring sentences of its document, and only the sentence's own words are labelled.

`read_conll` is the public CoNLL reader; the `Tagging` family (bert/tasks/family.py) wires the
rest into bert.finetune for `ner` and `tag`.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from bert import heads
from bert.files import write_atomically
from bert.model import BertConfig
from bert.tasks import TaskDataError
from bert.tasks.classification import text_lines, cross_entropy_sums, token_arrays
from bert.tasks.family import FineTuneTask, Family, Split
from bert.tokenizer import Tokenizer

Array = jax.Array
DOCSTART = "-DOCSTART-"
_TAG = re.compile(r"O|[BI]-\S+")


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One sentence of a CoNLL file: its words, their tags, its document and first line."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    document: int  # 0-based; -DOCSTART- lines separate documents
    line: int  # 1-based line of the first word, for messages


def read_conll(path: str | Path, *, labels: Sequence[str] | None = None,
               encoding: str = "utf-8") -> list[Sentence]:
    """Sentences of a CoNLL-column file (fields split on whitespace: token first, tag last).

    A line with a single field, a tag that is not O, B-TYPE or I-TYPE, or (with `labels`) a tag
    not among them stops with the file, line and field.
    """
    sentences: list[Sentence] = []
    words: list[tuple[str, str]] = []
    document, first_line = 0, 0

    def end_sentence() -> None:
        if words:
            sentences.append(Sentence(tuple(w for w, _ in words), tuple(t for _, t in words),
                                      document, first_line))
            words.clear()

    for line_number, line in enumerate(text_lines(path, encoding), start=1):
        fields = line.split()
        if not fields:
            end_sentence()
            continue
        if fields[0] == DOCSTART:
            end_sentence()
            if sentences and sentences[-1].document == document:
                document += 1
            continue
        if len(fields) < 2:
            raise TaskDataError(f"{path}:{line_number}: expected a token and a tag separated by "
                                f"whitespace, got {line.rstrip()!r}")
        tag = fields[-1]
        if not _TAG.fullmatch(tag):
            raise TaskDataError(f"{path}:{line_number}: tag (last field) is {tag!r}; expected "
                                "O, B-TYPE or I-TYPE (IOB1 or IOB2)")
        if labels is not None and tag not in labels:
            raise TaskDataError(f"{path}:{line_number}: tag (last field) is {tag!r}, not one of "
                                f"the labels {list(labels)}")
        if not words:
            first_line = line_number
        words.append((fields[0], tag))
    end_sentence()
    return sentences


def tag_labels(sentences: Iterable[Sentence]) -> tuple[str, ...]:
    """"O", then B- and I- of every entity type found, sorted: the classifier's label ids.

    Both prefixes of each type are listed, so an IOB1 training file (B- only between adjacent
    entities of one type) still gives every tag a later file may hold.
    """
    types = {tag[2:] for s in sentences for tag in s.tags if tag != "O"}
    return ("O", *(f"{prefix}-{t}" for t in sorted(types) for prefix in "BI"))


# ------------------------------------------------------------------------------- featurizing


@dataclasses.dataclass(frozen=True)
class WordMap:
    """Which word each labelled position of each window predicts."""

    sentence_ids: np.ndarray  # int32 [N]: the sentence whose words window n predicts
    word_ids: np.ndarray  # int32 [N, T]: the word at its first sub-token, -1 elsewhere


def _windows(lengths: Sequence[int], span: tuple[int, int], starts: Sequence[int],
             budget: int) -> list[tuple[int, int, list[int]]]:
    """(first token, end token, words) of each window predicting the words of `span`.

    `lengths` are the pieces of every word of the text the windows may take context from,
    `starts` their offsets, `span` the words to predict. They are cut into consecutive chunks
    (the whole span if it fits, else chunks of at most half the window, leaving room for
    context), and each chunk is widened equally both ways, within the text, up to `budget`.
    """
    first_word, end_word = span
    chunk_budget = budget if starts[end_word] - starts[first_word] <= budget else max(1, budget // 2)
    chunks: list[list[int]] = [[]]
    size = 0
    for word in range(first_word, end_word):
        if chunks[-1] and size + lengths[word] > chunk_budget:
            chunks.append([])
            size = 0
        chunks[-1].append(word)
        size += lengths[word]
    windows = []
    for chunk in chunks:
        low, high = starts[chunk[0]], starts[chunk[-1] + 1]
        room = budget - (high - low)
        right = min(starts[-1] - high, room - min(low, room // 2))
        left = min(low, room - right)
        windows.append((low - left, high + right, chunk))
    return windows


def featurize(sentences: Sequence[Sentence], tokenizer: Tokenizer, max_seq_len: int,
              labels: Sequence[str], *,
              document_context: bool = False) -> tuple[dict[str, np.ndarray], WordMap]:
    """Windows [N, max_seq_len] of [CLS] tokens [SEP] with `label_ids` and `label_weights`
    on the first sub-token of each predicted word, and the map from windows back to words.

    A word's pieces are capped at half the window (only the first one is labelled). Without
    `document_context` a window holds one sentence (or part of a long one).
    """
    budget = max_seq_len - 2
    if budget < 2:
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for words")
    label_index = {label: i for i, label in enumerate(labels)}
    all_words = [w for s in sentences for w in s.words]
    pieces_iter = iter(tokenizer.encode_batch(all_words))
    # Groups of sentences that share context: documents, or each sentence alone.
    key = (lambda i: sentences[i].document) if document_context else (lambda i: i)
    rows: list[list[int]] = []
    row_labels: list[dict[int, int]] = []
    sentence_ids: list[int] = []
    for _, group in itertools.groupby(range(len(sentences)), key=key):
        group = list(group)
        pieces = [(next(pieces_iter) or [tokenizer.unk_id])[: max(1, budget // 2)]
                  for s in group for _ in sentences[s].words]
        lengths = [len(p) for p in pieces]
        starts = [0, *itertools.accumulate(lengths)]
        flat = [token for p in pieces for token in p]
        first_word = 0
        for s in group:
            sentence = sentences[s]
            span = (first_word, first_word + len(sentence.words))
            for low, high, chunk in _windows(lengths, span, starts, budget):
                positions = {}
                for word in chunk:
                    tag = sentence.tags[word - first_word]
                    if tag not in label_index:
                        raise TaskDataError(f"sentence at line {sentence.line}: tag {tag!r} is "
                                            f"not one of the labels {list(labels)}")
                    positions[1 + starts[word] - low] = (word - first_word, label_index[tag])
                rows.append([tokenizer.cls_id, *flat[low:high], tokenizer.sep_id])
                row_labels.append(positions)
                sentence_ids.append(s)
            first_word = span[1]
    features = token_arrays(rows, [[]] * len(rows), max_seq_len)
    features["label_ids"] = np.zeros((len(rows), max_seq_len), np.int32)
    features["label_weights"] = np.zeros((len(rows), max_seq_len), np.float32)
    word_ids = np.full((len(rows), max_seq_len), -1, np.int32)
    for row, positions in enumerate(row_labels):
        for position, (word, label_id) in positions.items():
            features["label_ids"][row, position] = label_id
            features["label_weights"][row, position] = 1.0
            word_ids[row, position] = word
    return features, WordMap(np.array(sentence_ids, np.int32), word_ids)


def word_predictions(predicted_ids: np.ndarray, word_map: WordMap,
                     sentences: Sequence[Sentence], labels: Sequence[str]) -> list[list[str]]:
    """Predicted tags per word, from label ids [N, T'] (argmax over the token logits).

    T' may be shorter than max_seq_len (a length bucket) as long as it covers every window.
    """
    predicted_ids = np.asarray(predicted_ids)
    result: list[list[str | None]] = [[None] * len(s.words) for s in sentences]
    rows, positions = np.nonzero(word_map.word_ids >= 0)
    if len(rows) and positions.max() >= predicted_ids.shape[1]:
        raise ValueError(f"predictions cover {predicted_ids.shape[1]} tokens per window, but a "
                         f"word starts at token {positions.max()}")
    for row, position in zip(rows, positions):
        sentence = word_map.sentence_ids[row]
        result[sentence][word_map.word_ids[row, position]] = labels[predicted_ids[row, position]]
    missing = [(s, w) for s, tags in enumerate(result) for w, t in enumerate(tags) if t is None]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} words, e.g. sentence/word {missing[0]}")
    return result  # type: ignore[return-value]


# --------------------------------------------------------------------------------- loss sums


def loss_sums(outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Cross-entropy sums of logits (B, T, num_labels) over first sub-tokens of real rows;
    `count` is the number of labelled words."""
    weights = batch["label_weights"] * batch["example_weights"][:, None]
    return cross_entropy_sums(outputs, batch["label_ids"], weights)


def labelled_words(batch: Mapping[str, Array]) -> Array:
    """The loss's denominator: labelled positions (first sub-tokens) of real rows."""
    return jnp.sum(batch["label_weights"] * batch["example_weights"][:, None])


def token_task(model: nn.Module, inputs: Mapping[str, Array] | None = None) -> FineTuneTask:
    """Cross-entropy over the labelled positions of real rows; label ids out. `inputs`: init
    inputs of a tagger that reads other fields than token ids (bert/tasks/feature_probe.py)."""
    return FineTuneTask(
        model, loss_sums=loss_sums, sum_keys=("loss_sum", "correct", "count"),
        count=labelled_words,
        predictions=lambda logits: {"label_ids": jnp.argmax(logits, -1).astype(jnp.int32)},
        inputs=inputs)


# ----------------------------------------------------------------------------------- metrics


def entity_chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word) of each entity, with conlleval's chunk rules.

    An entity starts at a B- tag, or at an I- tag after O or after a different type; it goes
    on over I- tags of its type. IOB1 and IOB2 spellings of the same entities give the same
    chunks.
    """
    chunks = []
    start, previous_type = None, ""
    for position, tag in enumerate([*tags, "O"]):
        prefix, entity_type = (tag, "") if tag == "O" else (tag[0], tag[2:])
        continues = prefix == "I" and start is not None and entity_type == previous_type
        if start is not None and not continues:
            chunks.append((previous_type, start, position))
            start = None
        if prefix != "O" and not continues:
            start = position
        previous_type = entity_type
    return chunks


def entity_scores(gold: Sequence[Sequence[str]],
                  predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and f1 (0-1) over all sentences, as conlleval computes
    them: an entity counts only if its type and both boundaries match; 0.0 when undefined."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones")
    gold_chunks, predicted_chunks = set(), set()
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(predicted_tags)} predicted tags for "
                             f"{len(gold_tags)} words")
        gold_chunks.update((index, *chunk) for chunk in entity_chunks(gold_tags))
        predicted_chunks.update((index, *chunk) for chunk in entity_chunks(predicted_tags))
    correct = len(gold_chunks & predicted_chunks)
    precision = correct / len(predicted_chunks) if predicted_chunks else 0.0
    recall = correct / len(gold_chunks) if gold_chunks else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=f1)


def write_conll(path: str | Path, sentences: Sequence[Sentence],
                predicted: Sequence[Sequence[str]]) -> None:
    """`token gold predicted` per line, a blank line after each sentence: conlleval's input."""
    blocks = []
    for sentence, tags in zip(sentences, predicted, strict=True):
        blocks.append("".join(f"{w} {g} {p}\n" for w, g, p in zip(sentence.words, sentence.tags,
                                                                   tags, strict=True)))
    write_atomically(path, "\n".join(blocks) + ("\n" if blocks else ""))


# ------------------------------------------------------------------------------- the family


class Tagging(Family):
    """`ner` and `tag`: CoNLL columns, the first sub-token of each word labelled."""

    task_names = ("ner", "tag")
    head_kinds = ("token_classification",)
    selection_metric = "f1"

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer, pretrained)
        self._labels: tuple[str, ...] = tuple(x for x in config.labels.split(",") if x)

    @classmethod
    def objective(cls, model: nn.Module) -> FineTuneTask:
        return token_task(model)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def set_labels(self, train_path: str) -> None:
        if not self._labels:
            sentences = read_conll(train_path, encoding=self.config.reader.encoding)
            if not sentences:
                raise TaskDataError(f"{train_path}: no sentences (the file is empty or holds "
                                    "only -DOCSTART- lines)")
            self._labels = tag_labels(sentences)
            if len(self._labels) < 2:
                raise TaskDataError(f"{train_path}: every tag is O; name the entity tags with "
                                    "config.labels, or train on a file that has some")

    def load(self, name: str, path: str) -> Split:
        sentences = read_conll(path, labels=self._labels, encoding=self.config.reader.encoding)
        features, word_map = featurize(sentences, self.tokenizer, self.config.max_seq_len,
                                       self._labels, document_context=self.config.document_context)
        return Split(name, path, sentences, features, extra=word_map)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForTokenClassification(bert_config, len(self._labels))

    def _words(self, split: Split, predictions: Mapping[str, np.ndarray]) -> list[list[str]]:
        return word_predictions(predictions["label_ids"], split.extra, split.examples,
                                self._labels)

    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        return entity_scores([s.tags for s in split.examples], self._words(split, predictions))

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        path = os.path.join(directory, f"{split.name}_predictions.conll")
        write_conll(path, split.examples, self._words(split, predictions))
        return [path]
