"""Tokenized documents → next-sentence-prediction instances `[CLS] A [SEP] B [SEP]`.

This follows the original BERT recipe (create_instances_from_document): walk each document
accumulating sentences until a target length is reached; A is the first k of them, B is either
the real continuation (IsNext, label 0) or a span of a random *other* document (NotNext,
label 1), in which case the unused sentences are put back for the next instance. The pair is
then truncated longest-first, from the front or the back at random.

Three deliberate differences, all to keep the IsNext fraction at the 50% the paper states
(the original forces every one-sentence chunk to NotNext: measured 45% IsNext on documents of
~15 sentences):
* a chunk is only closed once it holds two sentences, and never so that a lone last sentence
  is left over;
* a one-sentence chunk, which can still arise at a document's end after sentences are put back,
  yields no instance (and a one-sentence document none at all; the corpus reader drops those);
* the random document is drawn from the other documents exactly, not by ten retries.
Sentences longer than the instance budget are split into budget-sized pieces first, so that an
enormous sentence becomes several instances rather than one truncated one.

Determinism: document `d` of duplicate `k` uses `numpy.random.default_rng([seed, k, d])`, so
the output is a pure function of (documents, settings, seed), independent of processing order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bert.data.corpus import DataError

IS_NEXT = 0  # next_sentence_labels convention of google-research/bert and Hugging Face
NOT_NEXT = 1

Segment = Sequence[int]  # token ids of one sentence
Document = Sequence[Segment]


@dataclasses.dataclass(frozen=True)
class Instances:
    """Packed NSP instances, padded to max_seq_len."""

    input_ids: np.ndarray  # int32 [N, T], [CLS] A [SEP] B [SEP] then pad_id
    segment_ids: np.ndarray  # int8 [N, T], 0 for [CLS] A [SEP], 1 for B [SEP], 0 for padding
    lengths: np.ndarray  # int32 [N], real tokens per row
    next_sentence_labels: np.ndarray  # int32 [N], IS_NEXT or NOT_NEXT

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def split_long_segments(document: Document, max_tokens: int) -> list[list[int]]:
    """Drops empty sentences and cuts ones longer than `max_tokens` into consecutive pieces."""
    pieces: list[list[int]] = []
    for segment in document:
        segment = list(segment)
        pieces.extend(segment[i:i + max_tokens] for i in range(0, len(segment), max_tokens))
    return pieces


def truncate_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                  rng: np.random.Generator) -> None:
    """Trims the longer of A and B, one token at a time from its front or back, in place."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def pairs_from_document(
    documents: Sequence[list[list[int]]],
    document_index: int,
    *,
    max_seq_len: int,
    short_seq_prob: float,
    rng: np.random.Generator,
) -> list[tuple[list[int], list[int], int]]:
    """The (tokens_a, tokens_b, label) pairs of one document; see the module docstring."""
    document = documents[document_index]
    max_num_tokens = max_seq_len - 3  # room for [CLS], [SEP], [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = int(rng.integers(2, max_num_tokens + 1))

    pairs = []
    current_chunk: list[list[int]] = []
    current_length = 0
    i = 0
    while i < len(document):
        current_chunk.append(document[i])
        current_length += len(document[i])
        # Close a full chunk only if it can hold A and B, and never leave a lone last sentence
        # behind: a one-sentence chunk has no real continuation.
        chunk_full = (current_length >= target_seq_length and len(current_chunk) >= 2
                      and i != len(document) - 2)
        if (i == len(document) - 1 or chunk_full) and len(current_chunk) >= 2:
            a_end = int(rng.integers(1, len(current_chunk)))
            tokens_a = [t for segment in current_chunk[:a_end] for t in segment]
            if rng.random() < 0.5:
                label = NOT_NEXT
                target_b_length = target_seq_length - len(tokens_a)
                other = int(rng.integers(0, len(documents) - 1))
                if other >= document_index:  # any document but this one
                    other += 1
                random_document = documents[other]
                tokens_b = []
                for segment in random_document[int(rng.integers(0, len(random_document))):]:
                    tokens_b.extend(segment)
                    if len(tokens_b) >= target_b_length:
                        break
                i -= len(current_chunk) - a_end  # put the unused sentences back
            else:
                label = IS_NEXT
                tokens_b = [t for segment in current_chunk[a_end:] for t in segment]
            truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
            pairs.append((tokens_a, tokens_b, label))
            current_chunk = []
            current_length = 0
        i += 1
    return pairs


def pack_pairs(pairs: Sequence[tuple[list[int], list[int], int]], *, max_seq_len: int,
               cls_id: int, sep_id: int, pad_id: int) -> Instances:
    """Lays pairs out as `[CLS] A [SEP] B [SEP]` rows padded with `pad_id`."""
    n = len(pairs)
    input_ids = np.full((n, max_seq_len), pad_id, dtype=np.int32)
    segment_ids = np.zeros((n, max_seq_len), dtype=np.int8)
    lengths = np.zeros((n,), dtype=np.int32)
    labels = np.zeros((n,), dtype=np.int32)
    for row, (tokens_a, tokens_b, label) in enumerate(pairs):
        tokens = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
        length = len(tokens)
        input_ids[row, :length] = tokens
        segment_ids[row, len(tokens_a) + 2:length] = 1
        lengths[row] = length
        labels[row] = label
    return Instances(input_ids, segment_ids, lengths, labels)


def create_instances(
    documents: Sequence[Document],
    *,
    max_seq_len: int,
    short_seq_prob: float,
    dupe_factor: int,
    seed: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> Instances:
    """All instances of all documents, `dupe_factor` times with independent randomness.

    Rows come out grouped by duplicate, then document (the input pipeline shuffles).
    """
    if max_seq_len < 5:
        raise DataError(f"config.max_seq_len must be at least 5 for [CLS] A [SEP] B [SEP], "
                        f"got {max_seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise DataError(f"config.data.short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if dupe_factor < 1:
        raise DataError(f"config.data.dupe_factor must be >= 1, got {dupe_factor}")
    docs = [split_long_segments(d, max_seq_len - 3) for d in documents]
    docs = [d for d in docs if d]
    if len(docs) < 2:
        raise DataError(f"next-sentence prediction needs at least two non-empty documents to "
                        f"draw random sentences from, got {len(docs)}")
    pairs = []
    for dupe in range(dupe_factor):
        for index in range(len(docs)):
            rng = np.random.default_rng([seed, dupe, index])
            pairs.extend(pairs_from_document(docs, index, max_seq_len=max_seq_len,
                                             short_seq_prob=short_seq_prob, rng=rng))
    if not pairs:
        raise DataError("no instance could be built: next-sentence prediction needs documents "
                        "of two or more sentences")
    return pack_pairs(pairs, max_seq_len=max_seq_len, cls_id=cls_id, sep_id=sep_id,
                      pad_id=pad_id)
