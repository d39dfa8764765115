"""Shared fixtures of the data and tokenizer tests (no tests here).

Everything is built once per test process: a small SentencePiece model trained on the shipped
corpus's eval addresses, and a config section in the exact shape the training code passes.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ml_collections

from bert.config import pretraining_config
from bert.data.corpus import read_sentences
from bert.tokenizer import SentencePieceTokenizer, train_sentencepiece

REPO_ROOT = Path(__file__).resolve().parents[1]
SOTU_TRAIN = REPO_ROOT / "data" / "sotu" / "train"
SOTU_EVAL = REPO_ROOT / "data" / "sotu" / "eval"
SMALL_VOCAB = 1000


@functools.cache
def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="bert-data-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def small_tokenizer() -> SentencePieceTokenizer:
    """SentencePiece, 1,000 pieces, trained on the five shipped eval addresses (~1 s)."""
    return train_sentencepiece(read_sentences(str(SOTU_EVAL / "*.txt")), SMALL_VOCAB,
                               str(_scratch() / "small" / "sp"))


@functools.cache
def small_tokenizer_dir() -> Path:
    directory = _scratch() / "small_tokenizer"
    small_tokenizer().save(directory)
    return directory


def pretrain_config(**data_overrides: Any) -> ml_collections.ConfigDict:
    """A pretraining config whose data section is pretraining_config()'s (every key the data
    stage reads, with its default), sized for fast tests.

    Train text: the five eval addresses (~37k tokens); eval text: two train addresses.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.max_seq_len = 64
    config.max_predictions_per_seq = 10
    config.batch_size = 8
    config.model = ml_collections.ConfigDict({"vocab_size": SMALL_VOCAB})
    # A plain dict, not the typed section: tests also set values of the wrong type.
    data = dict(
        pretraining_config().data.to_dict(),
        train_files=[str(SOTU_EVAL / "*.txt")],
        eval_files=",".join(str(SOTU_TRAIN / name) for name in
                            ("1913_woodrow_wilson_d.txt", "2010_barack_obama_d.txt")),
        tokenizer=str(small_tokenizer_dir()),
    )
    data.update(data_overrides)
    config.data = ml_collections.ConfigDict(data)
    return config
