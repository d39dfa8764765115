"""Corpus files → token ids of every sentence, as three flat arrays; tokenized across processes.

    tokens           int32 [total tokens]  every sentence's ids, back to back
    sentence_starts  int64 [S + 1]         sentence s is tokens[sentence_starts[s]:sentence_starts[s + 1]]
    document_starts  int64 [D + 1]         document d is sentences document_starts[d]:document_starts[d + 1]

As nested Python lists a token costs ~40 bytes and a worker's result minutes of pickling; as
arrays it costs 4 bytes and crosses a process boundary as one buffer. Instance creation needs
nothing but these offsets until it copies the chosen spans into rows.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bert.data.corpus import CorpusSummary, check_not_empty, expand_files, read_file_documents
from bert.data.parallel import TASKS_PER_WORKER, balanced_chunks, worker_map
from bert.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class TokenizedCorpus:
    """Token ids of a corpus's documents of sentences (layout in the module docstring)."""

    tokens: np.ndarray  # int32 [total tokens]
    sentence_starts: np.ndarray  # int64 [S + 1]
    document_starts: np.ndarray  # int64 [D + 1]

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @classmethod
    def from_lengths(cls, tokens: np.ndarray, sentence_lengths: Sequence[int] | np.ndarray,
                     document_sizes: Sequence[int] | np.ndarray) -> TokenizedCorpus:
        """From sentence lengths in tokens and document sizes in sentences."""
        return cls(tokens=np.asarray(tokens, dtype=np.int32),
                   sentence_starts=_starts(sentence_lengths),
                   document_starts=_starts(document_sizes))

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[Sequence[int]]]) -> TokenizedCorpus:
        """From documents as lists of sentences, each a list of token ids."""
        lengths = [len(sentence) for document in documents for sentence in document]
        tokens = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(
            documents)), dtype=np.int32, count=sum(lengths))
        return cls.from_lengths(tokens, lengths, [len(document) for document in documents])

    @classmethod
    def concatenate(cls, parts: Sequence[TokenizedCorpus]) -> TokenizedCorpus:
        return cls.from_lengths(
            np.concatenate([p.tokens for p in parts]),
            np.concatenate([np.diff(p.sentence_starts) for p in parts]),
            np.concatenate([np.diff(p.document_starts) for p in parts]))

    def documents(self) -> list[list[list[int]]]:
        """Back to nested lists (for tests and small inspections)."""
        tokens, starts = self.tokens.tolist(), self.sentence_starts.tolist()
        return [[tokens[starts[s]:starts[s + 1]] for s in range(first, end)]
                for first, end in itertools.pairwise(self.document_starts.tolist())]

    def split_long_sentences(self, max_tokens: int) -> TokenizedCorpus:
        """Drops empty sentences, cuts ones over `max_tokens` into consecutive pieces of at most
        `max_tokens`, and drops documents left without a sentence."""
        lengths = np.diff(self.sentence_starts)  # [S]
        pieces = -(-lengths // max_tokens)  # [S], 0 for an empty sentence
        piece_of = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        starts = np.repeat(self.sentence_starts[:-1], pieces) + max_tokens * piece_of
        # Sentences lie back to back, so a piece ends where the next one starts.
        sentence_starts = np.append(starts, self.sentence_starts[-1])
        pieces_before = np.concatenate([[0], np.cumsum(pieces)])  # [S + 1]
        document_starts = np.unique(pieces_before[self.document_starts])  # empty ones merge
        return TokenizedCorpus(self.tokens, sentence_starts.astype(np.int64),
                               document_starts.astype(np.int64))


def _starts(sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)


# Per-worker state: set once per process by `_set_worker_state`, read by every task.
_tokenizer: Tokenizer | None = None
_doc_separator = "file"


def _set_worker_state(tokenizer: Tokenizer, doc_separator: str) -> None:
    global _tokenizer, _doc_separator
    _tokenizer, _doc_separator = tokenizer, doc_separator


def _tokenize_files(paths: Sequence[Path]) -> tuple[TokenizedCorpus, CorpusSummary]:
    assert _tokenizer is not None, "_set_worker_state runs first"
    summary = CorpusSummary()
    documents = [document for path in paths
                 for document in read_file_documents(path, _doc_separator, summary)]
    # One call for all sentences: the tokenizer's native loop instead of one call per sentence.
    ids = _tokenizer.encode_batch([sentence for document in documents for sentence in document])
    lengths = [len(sentence) for sentence in ids]
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=sum(lengths))
    return TokenizedCorpus.from_lengths(tokens, lengths, [len(d) for d in documents]), summary


def tokenize_files(patterns: str | Sequence[str], *, tokenizer: Tokenizer, doc_separator: str,
                   key: str, num_workers: int = 1) -> tuple[TokenizedCorpus, CorpusSummary]:
    """Reads, sentence-splits and tokenizes every matched file, in `num_workers` processes.

    The result does not depend on `num_workers`: files are split into contiguous groups whose
    results are concatenated in file order. Raises `DataError` (naming the config `key`, file
    and line) as `bert.data.corpus.read_documents` does.
    """
    files = expand_files(patterns, key=key)
    groups = balanced_chunks([f.stat().st_size for f in files], num_workers * TASKS_PER_WORKER)
    with worker_map(min(num_workers, len(groups)), _set_worker_state,
                    (tokenizer, doc_separator)) as map_:
        results = list(map_(_tokenize_files, [[files[i] for i in group] for group in groups]))
    summary = CorpusSummary()
    for _, part in results:
        summary.add(part)
    check_not_empty(summary, key)
    return TokenizedCorpus.concatenate([corpus for corpus, _ in results]), summary
