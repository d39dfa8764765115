"""WordPiece tokenization: the paper's vocabulary type, trained here or imported with a checkpoint.

Those models were trained on a fixed `vocab.txt` with BERT's own text normalisation (optional
lower-casing and accent stripping, CJK characters split apart, punctuation split off); feeding them
any other segmentation silently degrades them. The `tokenizers` library implements exactly that
pipeline (it is what `transformers.BertTokenizerFast` runs), so this module only reads the folder's
settings and exposes the same interface as the SentencePiece tokenizer in `bert.tokenizer`.

A folder holds `vocab.txt` (one token per line, line number = id) and, optionally,
`tokenizer_config.json` in Hugging Face's format (`do_lower_case`, `strip_accents`,
`tokenize_chinese_chars`, special-token strings). Missing settings take Hugging Face's defaults,
so a folder behaves here exactly as `BertTokenizerFast.from_pretrained` treats it, with one
deliberate exception: when the folder does not say `do_lower_case`, casing is inferred from the
vocabulary (upper-case word pieces mean a cased model) instead of Hugging Face's blanket
lower-casing, which makes every capitalised piece of a cased checkpoint unreachable.

`train_wordpiece` learns an uncased vocabulary as the paper's was (30,522 tokens for the paper
configs) with the same normalisation and pre-tokenization, so the folder it saves tokenizes the
same in `transformers.BertTokenizer` as here.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from bert.files import json_object, write_atomically

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
CONTINUATION_PREFIX = "##"

# Hugging Face's BertTokenizer defaults, used for every setting a folder leaves out.
_SPECIAL_DEFAULTS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def _special_token_string(value: Any, key: str, path: str) -> str:
    """tokenizer_config.json stores a special token as a string or as an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{path}: {key} must be a string or a dict with 'content', got {value!r}")


def read_vocab(path: str) -> list[str]:
    """Tokens of a vocab.txt in id order (line n is id n).

    A token listed twice maps to its last line, as in Hugging Face's `load_vocab`, so ids agree
    with `BertTokenizerFast` even for such vocabularies.
    """
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    if not tokens:
        raise ValueError(f"{path} is empty")
    return tokens


def _looks_cased(vocab: list[str]) -> bool:
    """True when some ordinary piece has upper-case letters (bracketed specials do not count)."""
    return any(t != t.lower() for t in vocab if not (t.startswith("[") and t.endswith("]")))


class WordPieceTokenizer:
    """BERT's WordPiece tokenizer over a fixed vocabulary; ids match `BertTokenizerFast`'s."""

    def __init__(
        self,
        vocab: list[str],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        special_tokens: dict[str, str] | None = None,
        source: str = "<vocab>",
    ) -> None:
        """`strip_accents=None` follows `do_lower_case`, as in the original BERT release."""
        self.vocab = list(vocab)
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.special_tokens = {**_SPECIAL_DEFAULTS, **(special_tokens or {})}
        index = {token: i for i, token in enumerate(self.vocab)}
        missing = [t for t in self.special_tokens.values() if t not in index]
        if missing:
            raise ValueError(f"{source}: special tokens {missing} are not in the vocabulary")
        self.pad_id = index[self.special_tokens["pad_token"]]
        self.unk_id = index[self.special_tokens["unk_token"]]
        self.cls_id = index[self.special_tokens["cls_token"]]
        self.sep_id = index[self.special_tokens["sep_token"]]
        self.mask_id = index[self.special_tokens["mask_token"]]

        backend = _bert_backend(index, unk_token=self.special_tokens["unk_token"],
                                lowercase=do_lower_case, strip_accents=strip_accents,
                                chinese_chars=tokenize_chinese_chars)
        backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
        # Registered as special so that "[MASK]" written in text stays one token and is never
        # lower-cased, as in BertTokenizerFast.
        backend.add_special_tokens(list(dict.fromkeys(self.special_tokens.values())))
        self._backend = backend

    @classmethod
    def from_directory(cls, directory: str | Path) -> "WordPieceTokenizer":
        """A folder with vocab.txt and optionally Hugging Face's tokenizer_config.json."""
        vocab_path = os.path.join(directory, VOCAB_FILE)
        if not os.path.exists(vocab_path):
            raise FileNotFoundError(f"{vocab_path} is missing: a WordPiece folder needs {VOCAB_FILE}")
        settings: dict[str, Any] = {}
        config_path = os.path.join(directory, CONFIG_FILE)
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as f:
                settings = json_object(f.read(), config_path)
        for key in ("do_lower_case", "tokenize_chinese_chars"):
            if settings.get(key) is not None and not isinstance(settings[key], bool):
                raise ValueError(f"{config_path}: {key} must be true or false, got {settings[key]!r}")
        strip_accents = settings.get("strip_accents")
        if strip_accents is not None and not isinstance(strip_accents, bool):
            raise ValueError(f"{config_path}: strip_accents must be true, false or null")
        special = {
            key: _special_token_string(settings[key], key, config_path)
            for key in _SPECIAL_DEFAULTS
            if settings.get(key) is not None
        }
        vocab = read_vocab(vocab_path)
        do_lower_case = settings.get("do_lower_case")
        tokenize_chinese_chars = settings.get("tokenize_chinese_chars")
        return cls(
            vocab,
            do_lower_case=not _looks_cased(vocab) if do_lower_case is None else do_lower_case,
            strip_accents=strip_accents,
            tokenize_chinese_chars=True if tokenize_chinese_chars is None else tokenize_chinese_chars,
            special_tokens=special,
            source=vocab_path,
        )

    def save(self, directory: str | Path) -> None:
        """vocab.txt + tokenizer_config.json, readable by `BertTokenizerFast.from_pretrained` too."""
        os.makedirs(directory, exist_ok=True)
        # Only what differs from Hugging Face's defaults, besides casing, which is always stated.
        settings: dict[str, Any] = {"do_lower_case": self.do_lower_case}
        if self.strip_accents is not None:
            settings["strip_accents"] = self.strip_accents
        if not self.tokenize_chinese_chars:
            settings["tokenize_chinese_chars"] = False
        settings.update({k: v for k, v in self.special_tokens.items() if _SPECIAL_DEFAULTS[k] != v})
        texts = {
            VOCAB_FILE: "".join(token + "\n" for token in self.vocab),
            CONFIG_FILE: json.dumps(settings, indent=2, sort_keys=True) + "\n",
        }
        for name, text in texts.items():
            write_atomically(os.path.join(directory, name), text)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hex digest of the vocabulary and every setting that changes ids: a cache key."""
        digest = hashlib.sha256("\n".join(self.vocab).encode("utf-8"))
        settings = [self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars,
                    sorted(self.special_tokens.items())]
        digest.update(json.dumps(settings).encode("utf-8"))
        return digest.hexdigest()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without [CLS]/[SEP]."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts, run in parallel by the `tokenizers` library."""
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode` and each token's [start, end) character span in the original `text`."""
        encoding = self._backend.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, "##" continuations joined back onto their words; specials kept."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def id_to_token(self, token_id: int) -> str:
        return self.vocab[token_id]

    def word_start_mask(self) -> np.ndarray:
        """(V,) bool: True where a token begins a word (no "##"), for whole-word masking."""
        return self._word_starts

    @functools.cached_property
    def _word_starts(self) -> np.ndarray:
        mask = np.array([not t.startswith(CONTINUATION_PREFIX) for t in self.vocab], dtype=bool)
        mask.setflags(write=False)
        return mask


def _bert_backend(vocab: dict[str, int] | None, *, unk_token: str, lowercase: bool,
                  strip_accents: bool | None, chinese_chars: bool) -> Tokenizer:
    """BERT's normalizer and pre-tokenizer around a WordPiece model (empty when `vocab` is None)."""
    model = WordPiece(vocab, unk_token=unk_token) if vocab is not None else WordPiece(
        unk_token=unk_token, continuing_subword_prefix=CONTINUATION_PREFIX)
    backend = Tokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese_chars, strip_accents=strip_accents,
        lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return backend


def train_wordpiece(sentences: Iterable[str], vocab_size: int) -> WordPieceTokenizer:
    """An uncased WordPiece vocabulary of at most `vocab_size` tokens learnt from `sentences`.

    The five special tokens come first ([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4), then every
    character seen (so no word of the training text is [UNK]), then merged pieces by frequency.
    A small corpus can end below `vocab_size`: there is nothing left to merge.
    """
    specials = list(_SPECIAL_DEFAULTS.values())
    if vocab_size <= len(specials):
        raise ValueError(f"vocab_size must exceed {len(specials)}, got {vocab_size}")
    backend = _bert_backend(None, unk_token=_SPECIAL_DEFAULTS["unk_token"], lowercase=True,
                            strip_accents=None, chinese_chars=True)
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                               continuing_subword_prefix=CONTINUATION_PREFIX,
                               show_progress=False)
    backend.train_from_iterator(sentences, trainer=trainer)
    index = backend.get_vocab()
    if len(index) <= len(specials):
        raise ValueError("WordPiece training found no text to learn a vocabulary from")
    vocab = sorted(index, key=index.__getitem__)
    return WordPieceTokenizer(vocab, do_lower_case=True, source="trained WordPiece")
