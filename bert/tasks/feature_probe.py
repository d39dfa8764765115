"""The paper's feature-based approach (Table 7): a frozen encoder's layers feeding a BiLSTM tagger.

No encoder parameter is trained. Each word of a CoNLL file is represented by its first
sub-token's vector in every layer of the frozen encoder (0 = embeddings, i = block i, .. L),
with the words windowed exactly as the fine-tuning tagger windows them (bert/tasks/tagging.py,
optionally with document context). These vectors are computed once per (checkpoint, file,
max_seq_len, document_context, compute dtype) and stored in bfloat16 in a cache directory:

    <cache_dir>/<key>/words.npy     bfloat16 bits (uint16) [total words, L+1, H]
    <cache_dir>/<key>/offsets.npy   int64 [N+1]: sentence n's words are rows offsets[n]:offsets[n+1]
    <cache_dir>/<key>/meta.json     what the key was made of, for people

`key` is a content hash (encoder config, tokenizer files, param fingerprints, the file's bytes,
the options). Words are stored flat rather than padded to the longest sentence: CoNLL-2003's
train set averages 14 words a sentence against a longest of 113, so padding would take ~8x the
disk. Every strategy reads the same cache through a `LayerView`, which reads only the rows and
layers a batch asks for, so nothing is loaded whole.

Strategies (config.feature_strategy), as in Table 7:

    embeddings               layer 0
    last_hidden              layer L
    second_to_last_hidden    layer L-1
    weighted_sum_last_four   layers L-3..L, mixed with learned softmax-normalised scalar weights
                             (ELMo-style, initialised equal; ELMo's extra scale is left out, the
                             LSTM's input weights absorb it)
    concat_last_four         layers L-3..L concatenated (4H features)
    weighted_sum_all         layers 1..L (the paper's "all 12 layers" of BERT-base: the blocks,
                             not the embeddings), mixed as above

The tagger (`BiLSTMTagger`) runs a two-layer bidirectional LSTM of `lstm_size` units per
direction (768 in the paper) over the mixed word vectors and a dense layer per word; the loss is
the token cross-entropy over real words, as the fine-tuning tagger's. The `FeatureProbe`
family (a `Tagging` whose rows are sentences of cached word vectors) serves `ner_features`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from ml_collections import ConfigDict

from bert import checkpoint, features, heads, ops
from bert.model import BertConfig, BiLSTM
from bert.tasks import tagging
from bert.tasks.family import FineTuneTask, Split, check
from bert.tokenizer import Tokenizer

Array = jax.Array
STORAGE_DTYPE = ml_dtypes.bfloat16
CACHE_FORMAT = 1  # bump when the cache layout or its computation changes
WORDS_FILE, OFFSETS_FILE, META_FILE = "words.npy", "offsets.npy", "meta.json"


# ------------------------------------------------------------------------------- strategies


@dataclasses.dataclass(frozen=True)
class Strategy:
    """Which layers a strategy reads, [first, end) of (embeddings, block 1, .., block L), and
    how it combines them: "one" (a single layer), "concat" or "weighted_sum"."""

    name: str
    first: int
    end: int
    combine: str

    @property
    def num_layers(self) -> int:
        return self.end - self.first


STRATEGIES = ("embeddings", "last_hidden", "second_to_last_hidden", "weighted_sum_last_four",
              "concat_last_four", "weighted_sum_all")


def strategy(name: str, num_layers: int) -> Strategy:
    """The strategy `name` on an encoder of `num_layers` blocks."""
    top = num_layers
    spans = {"embeddings": (0, 1, "one"), "last_hidden": (top, top + 1, "one"),
             "second_to_last_hidden": (top - 1, top, "one"),
             "weighted_sum_last_four": (top - 3, top + 1, "weighted_sum"),
             "concat_last_four": (top - 3, top + 1, "concat"),
             "weighted_sum_all": (1, top + 1, "weighted_sum")}
    if name not in spans:
        raise ValueError(f"config.feature_strategy={name!r} is not one of {', '.join(STRATEGIES)}")
    first, end, combine = spans[name]
    if name != "embeddings" and first < 1:
        raise ValueError(f"config.feature_strategy={name!r} needs at least "
                         f"{num_layers - first + 1} encoder blocks; the model has {num_layers}")
    return Strategy(name, first, end, combine)


def mix_layers(word_features: Array, combine: str, weights: Array | None = None) -> Array:
    """(..., K, H) layer vectors -> (..., H) or, for "concat", (..., K·H); `weights` (K,) are
    the unnormalised scalar weights of "weighted_sum"."""
    if combine == "one":
        return word_features[..., 0, :]
    if combine == "concat":
        return word_features.reshape(*word_features.shape[:-2], -1)
    if combine == "weighted_sum":
        return jnp.einsum("...kh,k->...h", word_features, jax.nn.softmax(weights))
    raise ValueError(f"unknown layer combination {combine!r}")


# ------------------------------------------------------------------------------ the cache


@dataclasses.dataclass(frozen=True)
class CachedFeatures:
    """A file's cached word vectors: all layers, words of all sentences one after another."""

    words: np.ndarray  # bfloat16 [total words, L+1, H], memory-mapped
    offsets: np.ndarray  # int64 [N+1]

    @property
    def num_sentences(self) -> int:
        return len(self.offsets) - 1


class LayerView:
    """Rows of cached features as [N, width, K, H]: layers [first, end) of each sentence's words,
    zero past its last word. Indexing with rows reads only those rows' words and layers; it is
    what bert/tasks/batches.take_rows sees as the `word_features` array."""

    def __init__(self, cached: CachedFeatures, first: int, end: int, width: int) -> None:
        lengths = np.diff(cached.offsets)
        if len(lengths) and lengths.max() > width:
            raise ValueError(f"width {width} is less than the longest sentence's "
                             f"{lengths.max()} words")
        self.cached, self.first, self.end, self.width = cached, first, end, width
        self.shape = (cached.num_sentences, width, end - first, cached.words.shape[2])
        self.ndim = 4
        self.dtype = cached.words.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        rows = np.arange(len(self))[rows]
        if rows.ndim != 1:
            raise TypeError("a LayerView is indexed by a slice or a 1-D array of rows")
        out = np.zeros((len(rows), *self.shape[1:]), self.dtype)
        offsets = self.cached.offsets
        for i, row in enumerate(rows):
            start, stop = int(offsets[row]), int(offsets[row + 1])
            out[i, :stop - start] = self.cached.words[start:stop, self.first:self.end]
        return out


def _file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tokenizer_digest(tokenizer_dir: str) -> str:
    digest = hashlib.sha256()
    for name in sorted(os.listdir(tokenizer_dir)):
        path = os.path.join(tokenizer_dir, name)
        if os.path.isfile(path):
            digest.update(name.encode() + b"\0" + _file_digest(path).encode())
    return digest.hexdigest()


def cache_key(source: str, bert_config: BertConfig, encoder_params: Any, path: str | Path, *,
              encoding: str, max_seq_len: int, document_context: bool) -> tuple[str, dict]:
    """The content hash naming a file's cached features, and what it was made of."""
    parts = dict(format=CACHE_FORMAT, checkpoint=os.path.abspath(source),
                 encoder=json.loads(bert_config.to_json()),
                 tokenizer=_tokenizer_digest(os.path.join(source, checkpoint.TOKENIZER_DIR)),
                 params=checkpoint.fingerprints(encoder_params),
                 file=os.path.abspath(path), file_sha256=_file_digest(path), encoding=encoding,
                 max_seq_len=int(max_seq_len), document_context=bool(document_context))
    hashed = {k: v for k, v in parts.items() if k not in ("checkpoint", "file")}  # content only
    key = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:32]
    return key, {k: v for k, v in parts.items() if k != "params"}


def compute_word_features(directory: str, sentences: Sequence[tagging.Sentence],
                          tokenizer: Tokenizer, bert_config: BertConfig, encoder_params: Any, *,
                          max_seq_len: int, document_context: bool, batch_size: int = 32) -> None:
    """words.npy and offsets.npy of `sentences` in `directory` (see the module docstring)."""
    windows, word_map = tagging.featurize(sentences, tokenizer, max_seq_len,
                                          tagging.tag_labels(sentences),
                                          document_context=document_context)
    offsets = np.concatenate([[0], np.cumsum([len(s.words) for s in sentences])]).astype(np.int64)
    layers = bert_config.num_layers + 1
    words = np.lib.format.open_memmap(os.path.join(directory, WORDS_FILE), mode="w+",
                                      dtype=np.uint16,  # .npy has no bfloat16: its bits
                                      shape=(int(offsets[-1]), layers, bert_config.hidden_size))
    for start, stop, hidden in features.encoded_batches(
            bert_config, encoder_params, windows["input_ids"], windows["segment_ids"],
            windows["input_mask"], range(layers), batch_size=batch_size, progress=False):
        word_ids = word_map.word_ids[start:stop, :hidden.shape[2]]
        rows, positions = np.nonzero(word_ids >= 0)  # first sub-tokens of predicted words
        targets = offsets[word_map.sentence_ids[start + rows]] + word_ids[rows, positions]
        vectors = hidden[:, rows, positions].transpose(1, 0, 2)  # (words, L+1, H)
        words[targets] = vectors.astype(STORAGE_DTYPE).view(np.uint16)
    words.flush()
    del words
    np.save(os.path.join(directory, OFFSETS_FILE), offsets)


def read_cache(directory: str) -> CachedFeatures:
    words = np.load(os.path.join(directory, WORDS_FILE), mmap_mode="r").view(STORAGE_DTYPE)
    return CachedFeatures(words, np.load(os.path.join(directory, OFFSETS_FILE)))


def cached_word_features(cache_dir: str, source: str, path: str | Path,
                         sentences: Sequence[tagging.Sentence], tokenizer: Tokenizer,
                         bert_config: BertConfig, encoder_params: Any, *, encoding: str,
                         max_seq_len: int, document_context: bool,
                         batch_size: int = 32) -> CachedFeatures:
    """The cached features of `path`'s sentences, computed first if no cache holds them.

    A cache entry is written into a temporary directory and renamed into place when complete,
    so a killed run leaves no entry that looks finished; when two processes race, one rename
    wins and the other's copy is removed.
    """
    key, meta = cache_key(source, bert_config, encoder_params, path, encoding=encoding,
                          max_seq_len=max_seq_len, document_context=document_context)
    final = os.path.join(cache_dir, key)
    if not os.path.isdir(final):
        partial = f"{final}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        compute_word_features(partial, sentences, tokenizer, bert_config, encoder_params,
                              max_seq_len=max_seq_len, document_context=document_context,
                              batch_size=batch_size)
        with open(os.path.join(partial, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        try:
            os.rename(partial, final)
        except OSError:
            if not os.path.isdir(final):
                raise
            shutil.rmtree(partial)
    cached = read_cache(final)
    if cached.num_sentences != len(sentences):
        raise ValueError(f"{final}: cached features of {cached.num_sentences} sentences, "
                         f"but {path} has {len(sentences)}")
    return cached


# --------------------------------------------------------------------------------- the tagger


class BiLSTMTagger(nn.Module):
    """Logits (B, W, num_labels) per word from frozen layer vectors (B, W, K, H) and the word
    mask (B, W): layers mixed by `combine`, two bidirectional LSTM layers, a dense layer."""

    num_labels: int
    combine: str  # Strategy.combine
    num_feature_layers: int  # K
    lstm_size: int = 768  # units per direction
    lstm_layers: int = 2
    dropout_rate: float = 0.0  # on the LSTM inputs and outputs
    kind: ClassVar[str] = "feature_probe"

    @nn.compact
    def __call__(self, word_features: Array, input_mask: Array, *,
                 deterministic: bool = True) -> Array:
        weights = None
        if self.combine == "weighted_sum":  # equal at the start: softmax of zeros
            weights = self.param("layer_weights", nn.initializers.zeros, (self.num_feature_layers,))
        x = mix_layers(word_features.astype(jnp.float32), self.combine, weights)  # (B, W, H')
        for layer in range(self.lstm_layers):
            x = ops.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            x = BiLSTM(self.lstm_size, name=f"bilstm_{layer}")(x, input_mask)  # (B, W, 2·lstm_size)
        x = ops.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return nn.Dense(self.num_labels, name="classifier")(x)  # (B, W, num_labels)


# ------------------------------------------------------------------------------ rows and words


def word_rows(sentences: Sequence[tagging.Sentence], labels: Sequence[str],
              width: int) -> dict[str, np.ndarray]:
    """input_mask (int32), label_ids (int32) and label_weights (float32), [N, width], one row
    per sentence and one column per word."""
    index = {label: i for i, label in enumerate(labels)}
    shape = (len(sentences), width)
    rows = dict(input_mask=np.zeros(shape, np.int32), label_ids=np.zeros(shape, np.int32),
                label_weights=np.zeros(shape, np.float32))
    for n, sentence in enumerate(sentences):
        count = len(sentence.words)
        rows["input_mask"][n, :count] = 1
        rows["label_weights"][n, :count] = 1.0
        rows["label_ids"][n, :count] = [index[tag] for tag in sentence.tags]
    return rows


def predicted_tags(label_ids: np.ndarray, sentences: Sequence[tagging.Sentence],
                   labels: Sequence[str]) -> list[list[str]]:
    """Per-word tags from label ids [N, W'] (one row per sentence)."""
    label_ids = np.asarray(label_ids)
    return [[labels[i] for i in label_ids[n, :len(s.words)]] for n, s in enumerate(sentences)]


# ------------------------------------------------------------------------------- the family


class FeatureProbe(tagging.Tagging):
    """`ner_features`: the paper's feature-based NER (Table 7). Word vectors of the frozen
    encoder (cached, see the module docstring) feed a BiLSTM tagger trained from scratch; one
    row per sentence, one column per word.

    The word axis is padded to config.max_seq_len (or the longest sentence, if longer), so the
    length buckets of bert/tasks/batches cut it as they cut a token axis.
    """

    task_names = ("ner_features",)
    head_kinds = ()

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer,
                         pretrained or heads.Pretrained.folder(config.init_checkpoint))
        if not config.feature_cache_dir:
            raise ValueError("config.feature_cache_dir is empty (bert.finetune sets it to "
                             "DIR/feature_cache)")
        self.encoder_config = dataclasses.replace(self.pretrained.config, dtype=config.dtype)
        self.strategy = strategy(config.feature_strategy, self.encoder_config.num_layers)

    @classmethod
    def validate(cls, config: ConfigDict) -> None:
        check(int(config.lstm_size) >= 1, "lstm_size",
              f"must be a positive integer, got {config.lstm_size}")
        check(config.feature_strategy in STRATEGIES, "feature_strategy",
              f"{config.feature_strategy!r} is not one of {', '.join(STRATEGIES)}")
        check(not config.random_init, "random_init",
              "ner_features reads features of the trained encoder; a random one is not supported")

    @functools.cached_property
    def _encoder_params(self) -> Any:
        return self.pretrained.params()["bert"]

    def load(self, name: str, path: str) -> Split:
        c = self.config
        sentences = tagging.read_conll(path, labels=self._labels, encoding=c.reader.encoding)
        cached = cached_word_features(
            c.feature_cache_dir, c.init_checkpoint, path, sentences, self.tokenizer,
            self.encoder_config, self._encoder_params, encoding=c.reader.encoding,
            max_seq_len=int(c.max_seq_len), document_context=c.document_context,
            batch_size=int(c.batch_size))
        width = max([int(c.max_seq_len), *(len(s.words) for s in sentences)])
        rows = word_rows(sentences, self._labels, width)
        rows["word_features"] = LayerView(  # type: ignore[assignment]
            cached, self.strategy.first, self.strategy.end, width)
        return Split(name, path, sentences, rows)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return BiLSTMTagger(
            len(self._labels), self.strategy.combine, self.strategy.num_layers,
            lstm_size=int(self.config.lstm_size), dropout_rate=float(self.config.dropout_rate))

    def task(self, model: nn.Module) -> FineTuneTask:
        shape = (1, 8, self.strategy.num_layers, self.encoder_config.hidden_size)
        return tagging.token_task(model, inputs=dict(word_features=jnp.zeros(shape, jnp.float32),
                                                     input_mask=jnp.ones(shape[:2], jnp.int32)))

    def initial_params(self, source: str, model: nn.Module, rng: jax.Array) -> tuple[Any, str]:
        return None, f"{self.strategy.name} features of the frozen encoder of {source}; " \
                     "tagger initialised fresh"

    def task_head(self, model: nn.Module) -> heads.TaskHead | None:
        return None

    def _words(self, split: Split, predictions: Mapping[str, np.ndarray]) -> list[list[str]]:
        return predicted_tags(predictions["label_ids"], split.examples, self._labels)
