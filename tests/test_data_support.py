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
    """A pretraining config with every key the data stage reads, sized for fast tests.

    Train text: the five eval addresses (~37k tokens); eval text: two train addresses.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.max_seq_len = 64
    config.max_predictions_per_seq = 10
    config.batch_size = 8
    config.model = ml_collections.ConfigDict({"vocab_size": SMALL_VOCAB})
    data = dict(
        train_files=[str(SOTU_EVAL / "*.txt")],
        eval_files=",".join(str(SOTU_TRAIN / name) for name in
                            ("1913_woodrow_wilson_d.txt", "2010_barack_obama_d.txt")),
        tokenizer=str(small_tokenizer_dir()),
        cache_dir="",
        doc_separator="file",
        masking="dynamic",
        mask_prob=0.15,
        mask_token_ratio=0.8,
        random_token_ratio=0.1,
        keep_token_ratio=0.1,
        whole_word_mask=False,
        dupe_factor=1,
        short_seq_prob=0.1,
        nsp_weight=1.0,
        num_workers=0,
    )
    data.update(data_overrides)
    config.data = ml_collections.ConfigDict(data)
    return config
