"""Tokenized documents → next-sentence-prediction instances `[CLS] A [SEP] B [SEP]`.

This follows the original BERT recipe (create_instances_from_document): walk each document
accumulating sentences until a target length is reached; A is the first k of them, B is either
the real continuation (IsNext, label 0) or a span of a random *other* document (NotNext,
label 1), in which case the unused sentences are put back for the next instance. The pair is
then truncated longest-first, one token at a time from the front or the back at random.

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

How, for speed (~10x the original's per-token Python; see docs/PERFORMANCE.md): the walk only
touches sentence *lengths*, so a pair is four numbers (where A and B start and how long they
are) until all rows are cut out of the flat token array at once with numpy. Truncation is
counted, not simulated: which side loses how many tokens follows from the two lengths alone, and
how many of those come off the front is Binomial(n, 1/2), as n fair coin flips are. Documents
are paired in worker processes (`num_workers`).

Determinism: document `d` of duplicate `k` of corpus part `p` (bert/data/plan.py) uses
`numpy.random.default_rng([seed, p, k, d])`, so the output is a pure function of (documents,
settings, seed), independent of processing order, of the number of workers and of how many
processes share the parts. The random document of a NotNext pair comes from the same part, as
in the released recipe, which is run on each shard of the input separately.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from bert.data.corpus import DataError
from bert.data.parallel import TASKS_PER_WORKER, balanced_chunks, worker_map
from bert.data.tokenized import TokenizedCorpus

IS_NEXT = 0  # next_sentence_labels convention of google-research/bert and Hugging Face
NOT_NEXT = 1

Segment = Sequence[int]  # token ids of one sentence
Document = Sequence[Segment]


@dataclasses.dataclass(frozen=True)
class Instances:
    """NSP instances, one per row, padded to max_seq_len."""

    input_ids: np.ndarray  # int32 [N, T], [CLS] A [SEP] B [SEP] then pad_id
    segment_ids: np.ndarray  # int8 [N, T], 0 for [CLS] A [SEP], 1 for B [SEP], 0 for padding
    lengths: np.ndarray  # int32 [N], real tokens per row
    next_sentence_labels: np.ndarray  # int32 [N], IS_NEXT or NOT_NEXT

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def truncation_counts(length_a: int, length_b: int, max_tokens: int) -> tuple[int, int]:
    """Tokens trimmed from A and from B by "trim the longer one (B on a tie) until they fit".

    The longer side alone loses tokens until it is no longer longer; after that the two take
    turns, starting with B when A was longer (the lengths are then tied) and with A otherwise.
    """
    excess = length_a + length_b - max_tokens
    if excess <= 0:
        return 0, 0
    if length_a > length_b:
        alone = min(length_a - length_b, excess)
        rest = excess - alone
        return alone + rest // 2, (rest + 1) // 2
    alone = min(length_b - length_a + 1, excess)
    rest = excess - alone
    return (rest + 1) // 2, alone + rest // 2


@dataclasses.dataclass(frozen=True)
class _PairingState:
    """What every pairing task reads: the corpus's offsets (not its tokens) and the settings."""

    sentence_starts: np.ndarray  # int64 [S + 1]
    document_starts: np.ndarray  # int64 [D + 1]
    max_seq_len: int
    short_seq_prob: float
    seed: int
    part: int = 0

    @functools.cached_property
    def document_starts_list(self) -> list[int]:  # scalar reads from a list are ~5x faster
        return self.document_starts.tolist()


_state: _PairingState | None = None


def _set_pairing_state(state: _PairingState) -> None:
    global _state
    _state = state


# Pair spans: one int64 row per instance. A is tokens[a_start : a_start + a_length], B likewise.
_A_START, _A_LENGTH, _B_START, _B_LENGTH, _LABEL = range(5)


def _document_pairs(document: int, dupe: int) -> list[tuple[int, int, int, int, int]]:
    """The pair spans of one document (see the module docstring for the walk)."""
    state = _state
    assert state is not None, "_set_pairing_state runs first"
    rng = np.random.default_rng([state.seed, state.part, dupe, document])
    sentence_starts, document_starts = state.sentence_starts, state.document_starts_list
    first, end = document_starts[document], document_starts[document + 1]
    count = end - first
    starts = sentence_starts[first:end + 1].tolist()  # token offsets of this document
    num_documents = len(document_starts) - 1
    max_num_tokens = state.max_seq_len - 3  # room for [CLS], [SEP], [SEP]
    # Every instance consumes at least one sentence and at most four draws; two pick the target.
    draws = iter(rng.random(2 + 4 * count).tolist())
    short, pick = next(draws), next(draws)
    target = max_num_tokens
    if short < state.short_seq_prob:
        target = min(2 + int(pick * (max_num_tokens - 1)), max_num_tokens)

    pairs = []
    first_sentence = 0  # local index where the current chunk starts
    while first_sentence < count - 1:  # a chunk needs two sentences: A and B
        # The chunk closes at the first sentence i (holding two or more) where it reaches the
        # target, found by bisection on the token offsets, but never at the second-to-last
        # sentence: that would leave a lone last sentence behind, which has no continuation.
        reached = bisect.bisect_left(starts, starts[first_sentence] + target,
                                     first_sentence + 2, count + 1)
        last = reached - 1
        if last >= count - 2:
            last = count - 1
        chunk = last - first_sentence + 1
        a_end = first_sentence + min(1 + int(next(draws) * (chunk - 1)), chunk - 1)
        a_start, a_length = starts[first_sentence], starts[a_end] - starts[first_sentence]
        if next(draws) < 0.5:
            other = min(int(next(draws) * (num_documents - 1)), num_documents - 2)
            other += other >= document  # any document but this one
            o_first, o_end = document_starts[other], document_starts[other + 1]
            b_first = o_first + min(int(next(draws) * (o_end - o_first)), o_end - o_first - 1)
            # B takes whole sentences until it reaches the length A leaves of the target.
            b_start = int(sentence_starts[b_first])
            wanted = b_start + max(target - a_length, 1)
            b_end = min(b_first + 1 + int(sentence_starts[b_first + 1:o_end].searchsorted(wanted)),
                        o_end)
            pairs.append((a_start, a_length, b_start, int(sentence_starts[b_end]) - b_start,
                          NOT_NEXT))
            first_sentence = a_end  # the unused sentences are put back
        else:
            pairs.append((a_start, a_length, starts[a_end], starts[last + 1] - starts[a_end],
                          IS_NEXT))
            first_sentence = last + 1
    return _truncated(pairs, max_num_tokens, rng)


def _truncated(pairs: list[tuple[int, int, int, int, int]], max_num_tokens: int,
               rng: np.random.Generator) -> list[tuple[int, int, int, int, int]]:
    trims = [truncation_counts(a_length, b_length, max_num_tokens)
             for _, a_length, _, b_length, _ in pairs]
    if not any(a or b for a, b in trims):
        return pairs
    front = rng.binomial(np.array(trims, dtype=np.int64), 0.5).tolist()  # [n, 2]
    return [(a_start + front_a, a_length - trim_a, b_start + front_b, b_length - trim_b, label)
            for (a_start, a_length, b_start, b_length, label), (trim_a, trim_b), (front_a, front_b)
            in zip(pairs, trims, front)]


def _pair_documents(task: tuple[int, range]) -> np.ndarray:
    dupe, documents = task
    spans = [span for document in documents for span in _document_pairs(document, dupe)]
    return np.array(spans, dtype=np.int64).reshape(-1, 5)  # [n, 5]


def _rows(tokens: np.ndarray, spans: np.ndarray, *, max_seq_len: int, cls_id: int, sep_id: int,
          pad_id: int, chunk_rows: int = 16384) -> Instances:
    """Cuts every pair out of the flat token array into `[CLS] A [SEP] B [SEP]` rows."""
    n = len(spans)
    input_ids = np.empty((n, max_seq_len), dtype=np.int32)
    segment_ids = np.empty((n, max_seq_len), dtype=np.int8)
    position = np.arange(max_seq_len)[None, :]  # [1, T]
    for first in range(0, n, chunk_rows):
        rows = np.arange(first, min(first + chunk_rows, n))
        a_start, a_length, b_start, b_length = (spans[rows, k, None] for k in range(4))  # [n, 1]
        length = a_length + b_length + 3
        # Position p shows A's token p - 1 up to the first [SEP] and B's token p - |A| - 2 after;
        # the three separators and the padding are written over afterwards.
        source = position + np.where(position <= a_length, a_start - 1, b_start - a_length - 2)
        ids = tokens[np.clip(source, 0, len(tokens) - 1)]  # [n, T]
        ids[position >= length] = pad_id
        local = np.arange(len(rows))
        ids[local, 0] = cls_id
        ids[local, a_length[:, 0] + 1] = sep_id
        ids[local, length[:, 0] - 1] = sep_id
        input_ids[rows] = ids
        segment_ids[rows] = (position >= a_length + 2) & (position < length)
    lengths = (spans[:, _A_LENGTH] + spans[:, _B_LENGTH] + 3).astype(np.int32)
    return Instances(input_ids, segment_ids, lengths, spans[:, _LABEL].astype(np.int32))


def _check_settings(max_seq_len: int, short_seq_prob: float, dupe_factor: int) -> None:
    if max_seq_len < 5:
        raise DataError(f"config.max_seq_len must be at least 5 for [CLS] A [SEP] B [SEP], "
                        f"got {max_seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise DataError(f"config.data.short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if dupe_factor < 1:
        raise DataError(f"config.data.dupe_factor must be >= 1, got {dupe_factor}")


def _pairable(documents: Sequence[Document] | TokenizedCorpus, max_seq_len: int,
              where: str) -> TokenizedCorpus:
    corpus = (documents if isinstance(documents, TokenizedCorpus)
              else TokenizedCorpus.from_documents(documents))
    corpus = corpus.split_long_sentences(max_seq_len - 3)
    if corpus.num_documents < 2:
        raise DataError(f"next-sentence prediction needs at least two non-empty documents to "
                        f"draw random sentences from, got {corpus.num_documents}{where}")
    return corpus


def _instances(corpus: TokenizedCorpus, spans: list[np.ndarray], *, max_seq_len: int,
               cls_id: int, sep_id: int, pad_id: int) -> Instances:
    spans_array = np.concatenate(spans)  # [N, 5]
    if not len(spans_array):
        raise DataError("no instance could be built: next-sentence prediction needs documents "
                        "of two or more sentences")
    return _rows(corpus.tokens, spans_array, max_seq_len=max_seq_len, cls_id=cls_id,
                 sep_id=sep_id, pad_id=pad_id)


def part_instances(
    documents: Sequence[Document] | TokenizedCorpus,
    *,
    part: int,
    dupe: int,
    max_seq_len: int,
    short_seq_prob: float,
    seed: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    where: str = "",
) -> Instances:
    """Duplicate `dupe` of the instances of corpus part `part`, in this process.

    `where` names the part in errors (e.g. " in part 3 (corpus/a.txt)").
    """
    _check_settings(max_seq_len, short_seq_prob, dupe + 1)
    corpus = _pairable(documents, max_seq_len, where)
    _set_pairing_state(_PairingState(corpus.sentence_starts, corpus.document_starts,
                                     max_seq_len, short_seq_prob, seed, part))
    spans = _pair_documents((dupe, range(corpus.num_documents)))
    return _instances(corpus, [spans], max_seq_len=max_seq_len, cls_id=cls_id, sep_id=sep_id,
                      pad_id=pad_id)


def create_instances(
    documents: Sequence[Document] | TokenizedCorpus,
    *,
    max_seq_len: int,
    short_seq_prob: float,
    dupe_factor: int,
    seed: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    num_workers: int = 1,
) -> Instances:
    """All instances of all documents (as part 0), `dupe_factor` times with independent
    randomness.

    Rows come out grouped by duplicate, then document (the input pipeline shuffles). The
    result is the same for any `num_workers` (processes pairing documents).
    """
    _check_settings(max_seq_len, short_seq_prob, dupe_factor)
    corpus = _pairable(documents, max_seq_len, "")
    state = _PairingState(corpus.sentence_starts, corpus.document_starts, max_seq_len,
                          short_seq_prob, seed)
    sizes = np.diff(corpus.document_starts).tolist()  # sentences per document
    chunks = balanced_chunks(sizes, num_workers * TASKS_PER_WORKER)
    tasks = [(dupe, chunk) for dupe in range(dupe_factor) for chunk in chunks]
    with worker_map(min(num_workers, len(tasks)), _set_pairing_state, (state,)) as map_:
        spans = list(map_(_pair_documents, tasks))
    return _instances(corpus, spans, max_seq_len=max_seq_len, cls_id=cls_id, sep_id=sep_id,
                      pad_id=pad_id)
