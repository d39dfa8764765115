"""The reference of the data-preparation benchmark (benchmarks/data_prep.py): a port of the
original recipe, Google's create_pretraining_data.py (google-research/bert).

It keeps the original's structure: pure Python, one process, string tokens, per-instance loops
for NSP pairing, truncation and masking, then per-instance conversion to padded id lists. It
reads the same files as ours, splits them into sentences with the same splitter (the original
expects one sentence per line) and tokenizes with the same SentencePiece model, loaded by
sentencepiece itself (`sentencepiece_processor`), as the original loads its vocabulary: both
sides do the same work; only how differs. It lives here, not in bert/data, because nothing but
the benchmark runs it.
"""
from __future__ import annotations

import collections
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from bert.data.corpus import read_text, split_sentences
from bert.tokenizer import SENTENCEPIECE_FILE, SentencePieceTokenizer


_CLS, _SEP, _MASK = "[CLS]", "[SEP]", "[MASK]"


def tokenized_documents(files: Sequence[Path], sp: Any) -> list[list[list[str]]]:
    """One document per file, one sentence per entry, each a list of string pieces."""
    documents = []
    for path in files:
        document = []
        for line in read_text(path).split("\n"):
            line = line.strip()
            if line:
                document.extend(sp.encode(s, out_type=str) for s in split_sentences(line))
        documents.append([s for s in document if s])
    return [d for d in documents if d]


def _truncate(tokens_a: list[str], tokens_b: list[str], max_tokens: int,
              rng: random.Random) -> None:
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


_MaskedLm = collections.namedtuple("_MaskedLm", ["index", "label"])


def _masks(tokens: list[str], mask_prob: float, max_predictions: int, vocab_words: list[str],
           rng: random.Random, whole_word: bool) -> tuple[list[str], list[int], list[str]]:
    """The original's masking loop: shuffled candidate words, 80/10/10, sorted by position."""
    candidates: list[list[int]] = []
    for index, token in enumerate(tokens):
        if token == _CLS or token == _SEP:
            continue
        if whole_word and candidates and not token.startswith("\u2581"):
            candidates[-1].append(index)  # a continuation piece joins the word before it
        else:
            candidates.append([index])
    rng.shuffle(candidates)
    output = list(tokens)
    count = min(max_predictions, max(1, int(round(len(tokens) * mask_prob))))
    masked: list[_MaskedLm] = []
    covered: set[int] = set()
    for word in candidates:
        if len(masked) >= count:
            break
        if len(masked) + len(word) > count or any(index in covered for index in word):
            continue
        for index in word:
            covered.add(index)
            if rng.random() < 0.8:
                shown = _MASK
            elif rng.random() < 0.5:
                shown = tokens[index]
            else:
                shown = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output[index] = shown
            masked.append(_MaskedLm(index, tokens[index]))
    masked.sort(key=lambda m: m.index)
    return output, [m.index for m in masked], [m.label for m in masked]


def _instances(documents: list[list[list[str]]], index: int, *, max_seq_len: int,
               short_seq_prob: float, mask_prob: float, max_predictions: int,
               vocab_words: list[str], rng: random.Random, whole_word: bool) -> list[tuple]:
    document = documents[index]
    max_tokens = max_seq_len - 3
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_tokens)
    instances = []
    chunk: list[list[str]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for segment in chunk[:a_end] for t in segment]
                tokens_b: list[str] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    other_document = documents[other]
                    for segment in other_document[rng.randint(0, len(other_document) - 1):]:
                        tokens_b.extend(segment)
                        if len(tokens_b) >= target - len(tokens_a):
                            break
                    i -= len(chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = [t for segment in chunk[a_end:] for t in segment]
                _truncate(tokens_a, tokens_b, max_tokens, rng)
                if tokens_a and tokens_b:
                    tokens = [_CLS, *tokens_a, _SEP, *tokens_b, _SEP]
                    segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                    tokens, positions, labels = _masks(
                        tokens, mask_prob, max_predictions, vocab_words, rng, whole_word)
                    instances.append((tokens, segment_ids, is_random_next, positions, labels))
            chunk = []
            length = 0
        i += 1
    return instances


def _features(instance: tuple, piece_to_id: dict[str, int], max_seq_len: int,
              max_predictions: int) -> tuple[list, ...]:
    tokens, segment_ids, is_random_next, positions, labels = instance
    input_ids = [piece_to_id[t] for t in tokens]
    input_mask = [1] * len(input_ids)
    segment_ids = list(segment_ids)
    while len(input_ids) < max_seq_len:
        input_ids.append(0)
        input_mask.append(0)
        segment_ids.append(0)
    label_ids = [piece_to_id[t] for t in labels]
    weights = [1.0] * len(label_ids)
    positions = list(positions)
    while len(positions) < max_predictions:
        positions.append(0)
        label_ids.append(0)
        weights.append(0.0)
    return (input_ids, input_mask, segment_ids, positions, label_ids, weights,
            1 if is_random_next else 0)


def reference_examples(documents: list[list[list[str]]], sp: Any, *, max_seq_len: int,
                       max_predictions: int, mask_prob: float, dupe_factor: int,
                       short_seq_prob: float, seed: int,
                       whole_word: bool = False) -> dict[str, np.ndarray]:
    """The recipe proper on tokenized documents: pair, mask, pad; arrays per feature."""
    rng = random.Random(seed)
    documents = list(documents)
    rng.shuffle(documents)
    vocab_words = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    piece_to_id = {piece: i for i, piece in enumerate(vocab_words)}
    instances = []
    for _ in range(dupe_factor):
        for index in range(len(documents)):
            instances.extend(_instances(
                documents, index, max_seq_len=max_seq_len, short_seq_prob=short_seq_prob,
                mask_prob=mask_prob, max_predictions=max_predictions, vocab_words=vocab_words,
                rng=rng, whole_word=whole_word))
    rng.shuffle(instances)
    features = [_features(x, piece_to_id, max_seq_len, max_predictions)
                for x in instances]
    names = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
             "masked_lm_weights", "next_sentence_labels")
    return {name: np.array([f[k] for f in features]) for k, name in enumerate(names)}


def reference_prepare(files: Sequence[Path], sp: Any, **settings: Any) -> dict[str, np.ndarray]:
    """The original recipe end to end: read, split, tokenize, then `reference_examples`."""
    return reference_examples(tokenized_documents(files, sp), sp, **settings)


def sentencepiece_processor(tokenizer: SentencePieceTokenizer) -> spm.SentencePieceProcessor:
    """The tokenizer's model as sentencepiece loads it: the reference tokenizes into string
    pieces (`encode(..., out_type=str)`), which bert's Tokenizer interface does not return."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save(directory)
        return spm.SentencePieceProcessor(model_file=str(Path(directory) / SENTENCEPIECE_FILE))
