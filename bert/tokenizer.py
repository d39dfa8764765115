"""Tokenizers behind one small interface: SentencePiece (trained here) and WordPiece (imported).

Everything downstream (instance building, masking, features, fine-tuning) sees only the
`Tokenizer` protocol: ids of the five special tokens, `encode`/`decode`, and the
`word_start_mask` that whole-word masking groups tokens with. Two formats serve it:

* `SentencePieceTokenizer`: the model this project trains from raw text with
  `train_sentencepiece`. [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4; [CLS]/[SEP]/[MASK] are
  *control* symbols, so text that literally contains "[MASK]" is tokenized as ordinary
  characters and can never forge a special token. Byte fallback is on, so any character
  round-trips (no [UNK] at fine-tuning time on unseen scripts).
* `WordPieceTokenizer`: a BERT `vocab.txt` as shipped with Google/Hugging Face checkpoints,
  run by the `tokenizers` library with BERT's own pre-tokenization, so imported checkpoints
  see exactly the ids they were trained on.

A model folder holds the tokenizer's files under fixed names (`sentencepiece.model`, or
`vocab.txt` + `tokenizer_config.json`); `load_tokenizer` dispatches on what it finds.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import sentencepiece as spm

from bert.files import write_atomically
from bert.wordpiece import VOCAB_FILE as WORDPIECE_VOCAB_FILE
from bert.wordpiece import WordPieceTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTENCEPIECE_FILE = "sentencepiece.model"


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable, or lacks a required special token."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline and the model CLIs need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def pad_id(self) -> int: ...
    @property
    def unk_id(self) -> int: ...
    @property
    def cls_id(self) -> int: ...
    @property
    def sep_id(self) -> int: ...
    @property
    def mask_id(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Hex digest of the tokenizer's files: a cache key for tokenized data."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without [CLS]/[SEP]."""
        ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts; implementations use their native batch path."""
        ...

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode(text)` and each token's [start, end) character span in the original `text`.

        Spans never include the whitespace before a word; pieces that carry no character of
        their own (all but the last byte of a byte-fallback character) get an empty span.
        """
        ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def id_to_token(self, token_id: int) -> str: ...

    def word_start_mask(self) -> np.ndarray:
        """bool [vocab_size]: True where a token begins a new word (specials too)."""
        ...

    def save(self, directory: str | Path) -> None:
        """Writes the tokenizer's files into `directory` (created if needed)."""
        ...


def special_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The ids of [PAD] [UNK] [CLS] [SEP] [MASK], in that order."""
    return (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
            tokenizer.mask_id)


class SentencePieceTokenizer:
    """A SentencePiece model with BERT's five special pieces."""

    def __init__(self, model_proto: bytes, *, source: str) -> None:
        """`source` names where the bytes came from, for error messages."""
        self._proto = model_proto
        self._source = source
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self._pad_id = self._sp.pad_id()
        if self._pad_id < 0:
            raise TokenizerError(f"{source}: SentencePiece model has no pad piece; train it "
                                 "with bert.tokenizer.train_sentencepiece")
        self._cls_id, self._sep_id, self._mask_id = (self._control_id(p) for p in
                                                     ("[CLS]", "[SEP]", "[MASK]"))

    def _control_id(self, piece: str) -> int:
        token_id = self._sp.piece_to_id(piece)
        if token_id == self._sp.unk_id() or not self._sp.is_control(token_id):
            raise TokenizerError(f"{self._source}: SentencePiece model has no control piece "
                                 f"{piece}; train it with bert.tokenizer.train_sentencepiece")
        return token_id

    @classmethod
    def from_file(cls, path: str | Path) -> SentencePieceTokenizer:
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"SentencePiece model not found: {path}")
        return cls(path.read_bytes(), source=str(path))

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def cls_id(self) -> int:
        return self._cls_id

    @property
    def sep_id(self) -> int:
        return self._sep_id

    @property
    def mask_id(self) -> int:
        return self._mask_id

    @functools.cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(self._proto).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = self._sp.encode(text, out_type="offset_mapping")
        spans = []
        for start, end in encoded["offsets"]:
            # A word-initial piece's span covers the whitespace its "\u2581" stands for.
            while start < end and text[start].isspace():
                start += 1
            spans.append((start, end))
        return encoded["ids"], spans

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_token(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def word_start_mask(self) -> np.ndarray:
        return self._word_starts

    @functools.cached_property
    def _word_starts(self) -> np.ndarray:
        # Pieces that open a word carry the "▁" (U+2581) prefix; byte-fallback and other
        # continuation pieces do not; control/unknown pieces stand alone.
        sp = self._sp
        mask = np.array([sp.id_to_piece(i).startswith("\u2581") or sp.is_control(i)
                         or sp.is_unknown(i) for i in range(self.vocab_size)], dtype=bool)
        mask.setflags(write=False)
        return mask

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SENTENCEPIECE_FILE).write_bytes(self._proto)


def _load_wordpiece(directory: Path) -> WordPieceTokenizer:
    try:
        return WordPieceTokenizer.from_directory(directory)
    except (OSError, ValueError) as err:
        raise TokenizerError(str(err)) from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Loads a tokenizer from a `*.model` file or a folder written by `Tokenizer.save`.

    A folder is SentencePiece if it holds `sentencepiece.model`, WordPiece if it holds
    `vocab.txt`; anything else is an error naming the path and what was looked for.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".model":
        return SentencePieceTokenizer.from_file(path)
    if path.is_file() and path.name == WORDPIECE_VOCAB_FILE:
        return _load_wordpiece(path.parent)
    if path.is_dir():
        if (path / SENTENCEPIECE_FILE).is_file():
            return SentencePieceTokenizer.from_file(path / SENTENCEPIECE_FILE)
        if (path / WORDPIECE_VOCAB_FILE).is_file():
            return _load_wordpiece(path)
        raise TokenizerError(f"no tokenizer in {path}: expected {SENTENCEPIECE_FILE} "
                             f"(SentencePiece) or {WORDPIECE_VOCAB_FILE} (WordPiece)")
    raise TokenizerError(f"tokenizer not found: {path} (expected a *.model file, a vocab.txt, "
                         "or a folder holding one)")


def train_sentencepiece(
    sentences: Iterable[str],
    vocab_size: int,
    output_prefix: str,
    *,
    model_type: str = "unigram",
    character_coverage: float = 0.9999,
    byte_fallback: bool = True,
    input_sentence_size: int = 2_000_000,
    seed: int = 0,
    num_threads: int = 2,
) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on `sentences` (streamed); writes `<output_prefix>.model`.

    The caller reads the text: `bert.data.corpus.read_sentences`, or the data stage's training
    sentences, so training sees the same sentence split as pretraining, and a file that is one
    enormous line (the shipped corpus) is usable at all: SentencePiece skips input lines over
    4 KB. Training is deterministic for fixed inputs and `seed`: at most `input_sentence_size`
    sentences are sampled with that seed. The model is written through a temporary file and
    renamed, so a crash never leaves a truncated `.model` behind.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise TokenizerError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    counted = _Counted(sentences)
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(counted),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=num_threads,
            pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
            pad_piece="[PAD]", unk_piece="[UNK]",
            control_symbols=["[CLS]", "[SEP]", "[MASK]"],
            minloglevel=2,
        )
    except RuntimeError as err:
        raise TokenizerError(f"SentencePiece training on {counted.count} sentences with "
                             f"vocab_size={vocab_size} failed: {err}") from None
    output = Path(f"{output_prefix}.model")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(output, model.getvalue())
    return SentencePieceTokenizer(model.getvalue(), source=str(output))


class _Counted:
    """Iterates `items` once, counting them (for error messages about a streamed input)."""

    def __init__(self, items: Iterable[str]) -> None:
        self._items, self.count = items, 0

    def __iter__(self) -> Iterator[str]:
        for item in self._items:
            self.count += 1
            yield item
