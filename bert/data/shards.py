"""One part of the corpus → one shard of stored examples; many shards → one split's rows.

A shard is a folder of .npy files, one per array, holding every duplicate of one corpus part
(bert/data/plan.py), rows grouped by duplicate:

    <split>/part-00003/input_ids.npy   int32 [n, T]   (and the other arrays of records.py)
    <split>/part-00003/summary.json    what this part read and made

It is built in memory one duplicate at a time and appended to its files, so preparing a part
holds its tokens and one duplicate's rows, whatever the corpus size; it is written under a
temporary name and renamed, so a shard folder either is complete or does not exist, and a rerun
after a crash redoes only the missing parts.

Why .npy files and not array_record (which grain reads natively): rows have a fixed size, so a
row's place in a file is a multiplication, and a batch is one fancy-indexing read of a memory
map per shard. Reading random 256-row batches of 128 tokens measured 13,600-20,000 batches/s
from memory-mapped .npy shards against 140-165 from array_record files (group_size 1, with and
without compression), and writing was 2.5-6x faster (docs/PERFORMANCE.md).

`ShardedRows` joins a split's shards into one array-like whose row i is the i-th row of the
concatenation in part order, so the input pipeline indexes it exactly as it indexed one array.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bert.data.corpus import CorpusSummary, DataError, piece_documents
from bert.data.instances import IS_NEXT, Instances, part_instances
from bert.data.masking import MaskingConfig, MaskVocabulary, mask_batch, row_keys
from bert.data.packing import PackedInstances, pack, pack_indices
from bert.data.plan import Part
from bert.data.tokenized import TokenizedCorpus
from bert.tokenizer import Tokenizer

BASE_ARRAYS = ("input_ids", "segment_ids", "lengths", "next_sentence_labels")
MASK_ARRAYS = ("masked_lm_positions", "masked_lm_ids", "masked_lm_inputs", "masked_lm_weights")
# Random streams are keyed by (seed, purpose, ...) so that no two purposes share draws.
STATIC_MASK_STREAM = 1
SUMMARY_FILE = "summary.json"
_ENCODE_BATCH = 8192  # sentences per tokenizer call: the native batch loop, bounded memory
_HEADER_BYTES = 128  # .npy header room: any row count fits, so it is rewritten in place


def shard_name(part: int) -> str:
    return f"part-{part:05d}"


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to turn parts into shards (pickled once per worker)."""

    tokenizer: Tokenizer
    corpus_format: str
    doc_separator: str
    text_field: str
    max_seq_len: int
    short_seq_prob: float
    seed: int
    mask: MaskingConfig | None  # static masks to store, or None
    vocab: MaskVocabulary
    packing: bool
    max_instances_per_pack: int


def tokenize_part(part: Part, job: ShardJob) -> tuple[TokenizedCorpus, CorpusSummary]:
    """Reads and tokenizes a part's documents, a batch of sentences at a time."""
    summary = CorpusSummary()
    token_chunks: list[np.ndarray] = []
    sentence_lengths: list[int] = []
    document_sizes: list[int] = []
    pending: list[str] = []

    def encode() -> None:
        ids = job.tokenizer.encode_batch(pending)
        sentence_lengths.extend(len(sentence) for sentence in ids)
        token_chunks.append(np.fromiter((t for sentence in ids for t in sentence),
                                        dtype=np.int32, count=sum(len(s) for s in ids)))
        pending.clear()

    for piece in part.pieces:
        for document in piece_documents(piece, summary, doc_separator=job.doc_separator,
                                        corpus_format=job.corpus_format,
                                        text_field=job.text_field):
            pending.extend(document)
            document_sizes.append(len(document))
            if len(pending) >= _ENCODE_BATCH:
                encode()
    if pending:
        encode()
    tokens = np.concatenate(token_chunks) if token_chunks else np.zeros((0,), np.int32)
    return TokenizedCorpus.from_lengths(tokens, sentence_lengths, document_sizes), summary


def static_masks(rows: Instances | PackedInstances, mask: MaskingConfig, vocab: MaskVocabulary,
                 *, seed: int, stream: int, first_row: int = 0,
                 chunk_rows: int = 4096) -> dict[str, np.ndarray]:
    """Masks every row once; row i's masks are keyed by (seed, stream, first_row + i)."""
    chunks = []
    for first in range(0, len(rows), chunk_rows):
        local = np.arange(first, min(first + chunk_rows, len(rows)))
        chunks.append(mask_batch(rows.input_ids[local], rows.lengths[local],
                                 row_keys(seed, stream, first_row + local), mask, vocab))
    return {"masked_lm_positions": np.concatenate([c.positions for c in chunks]),
            "masked_lm_ids": np.concatenate([c.labels for c in chunks]),
            "masked_lm_inputs": np.concatenate([c.inputs for c in chunks]),
            "masked_lm_weights": np.concatenate([c.weights for c in chunks])}


def part_stream(stream: int, part: int) -> int:
    """The random stream of `stream`'s draws within part `part`."""
    return int(np.random.SeedSequence([stream, part]).generate_state(1, np.uint64)[0])


class GrowingArray:
    """An .npy file written a block of rows at a time; the header, sized for any row count,
    is rewritten with the final count by `close`."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self._file: BinaryIO = open(path, "wb")
        self._dtype, self._row_shape, self.rows = np.dtype(dtype), row_shape, 0
        self._file.write(self._header())

    def _header(self) -> bytes:
        text = repr({"descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False,
                     "shape": (self.rows, *self._row_shape)})
        text = text.ljust(_HEADER_BYTES - 11) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")

    def append(self, array: np.ndarray) -> None:
        assert array.shape[1:] == self._row_shape, (array.shape, self._row_shape)
        self._file.write(np.ascontiguousarray(array, dtype=self._dtype).tobytes())
        self.rows += len(array)

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(self._header())
        self._file.close()


def write_shard(directory: Path, part_index: int, part: Part, job: ShardJob,
                dupe_factor: int, *, pack_rows: bool) -> dict[str, Any]:
    """Prepares one part into `directory` (which exists and is empty); returns its summary."""
    started = time.perf_counter()
    tokenizer = job.tokenizer
    corpus, corpus_summary = tokenize_part(part, job)
    where = f" in part {part_index} ({part.describe()}); raise config.data.part_mb"
    files: dict[str, GrowingArray] = {}
    lengths, labels = [], []
    packed_rows = 0
    for dupe in range(dupe_factor):
        instances = part_instances(
            corpus, part=part_index, dupe=dupe, max_seq_len=job.max_seq_len,
            short_seq_prob=job.short_seq_prob, seed=job.seed, cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id, where=where)
        lengths.append(instances.lengths)
        labels.append(instances.next_sentence_labels)
        rows: Instances | PackedInstances = instances
        arrays = {}
        if pack_rows:
            packs = pack_indices(instances.lengths, max_seq_len=job.max_seq_len,
                                 max_instances=job.max_instances_per_pack, seed=job.seed,
                                 shard=(part_index, dupe))
            rows = pack(instances, packs, pad_id=tokenizer.pad_id)
            arrays["instance_lengths"] = rows.instance_lengths
        arrays.update({name: getattr(rows, name) for name in BASE_ARRAYS})
        if job.mask is not None:
            arrays.update(static_masks(rows, job.mask, job.vocab, seed=job.seed,
                                       stream=part_stream(STATIC_MASK_STREAM, part_index),
                                       first_row=packed_rows))
        for name, array in arrays.items():
            if name not in files:
                files[name] = GrowingArray(directory / f"{name}.npy", array.dtype,
                                           array.shape[1:])
            files[name].append(array)
        packed_rows += len(rows)
        del instances, rows, arrays
    for growing in files.values():
        growing.close()
    all_lengths = np.concatenate(lengths)
    tokens = int(all_lengths.sum())
    summary = {**corpus_summary.to_dict(),
               "text_bytes": part.text_bytes,
               "corpus_tokens": int(corpus.tokens.size),
               "instances": int(len(all_lengths)),
               "instance_tokens": tokens,
               "is_next": int(np.sum(np.concatenate(labels) == IS_NEXT)),
               "rows": packed_rows,
               "seconds": round(time.perf_counter() - started, 3)}
    (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class ShardedRows(np.lib.mixins.NDArrayOperatorsMixin):
    """Row-wise concatenation of memory-mapped shards, indexed like one numpy array.

    `rows[i]`, `rows[indices]`, `rows[a:b]` and `rows[indices, columns]` read only the rows
    asked for, from the shards that hold them; arithmetic, numpy functions and ndarray methods
    (`rows.sum()`) read everything, as `np.asarray(rows)` does.
    """

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        if not shards:
            raise ValueError("ShardedRows needs at least one shard")
        self.shards = list(shards)
        self._starts = np.cumsum([0] + [len(s) for s in self.shards])  # [S + 1]
        self.shape = (int(self._starts[-1]), *self.shards[0].shape[1:])
        self.dtype = self.shards[0].dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        joined = np.concatenate([np.asarray(s) for s in self.shards])
        return joined if dtype is None else joined.astype(dtype)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        arrays = [np.asarray(x) if isinstance(x, ShardedRows) else x for x in inputs]
        return getattr(ufunc, method)(*arrays, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "shards":
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def _take(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` (any shape of int indices) with shape rows.shape + row shape."""
        flat = rows.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + len(self), flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        shard_of = np.searchsorted(self._starts, flat, side="right") - 1
        out = np.empty((len(flat), *self.shape[1:]), dtype=self.dtype)
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(len(self.shards) + 1))
        for shard, (first, last) in enumerate(zip(bounds[:-1], bounds[1:])):
            if first < last:
                picked = order[first:last]
                out[picked] = self.shards[shard][flat[picked] - self._starts[shard]]
        return out.reshape(rows.shape + self.shape[1:])

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        rows, rest = key[0], key[1:]
        if isinstance(rows, slice):
            taken = self._take(np.arange(len(self))[rows])
            return taken[(slice(None), *rest)] if rest else taken
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        taken = self._take(rows)
        if not rest:
            return taken
        if rows.ndim == 0:
            return taken[rest]
        # Advanced indices broadcast together, as numpy does for a[rows, columns].
        return taken.reshape(-1, *self.shape[1:])[(np.arange(rows.size).reshape(rows.shape),
                                                   *rest)]


def load_shards(directories: Sequence[Path], names: Sequence[str]) -> dict[str, ShardedRows]:
    """Memory-maps `names` of every shard folder; errors name the folder to delete."""
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for directory in directories:
        counts = {}
        for name in names:
            path = directory / f"{name}.npy"
            if not path.is_file():
                raise DataError(f"{path} is missing from the prepared-data cache; delete "
                                f"{directory} to rebuild it")
            arrays[name].append(np.load(path, mmap_mode="r"))
            counts[name] = len(arrays[name][-1])
        if len(set(counts.values())) != 1:
            raise DataError(f"{directory}: arrays disagree on the number of rows {counts}; "
                            f"delete {directory} to rebuild it")
    return {name: ShardedRows(shards) for name, shards in arrays.items()}
