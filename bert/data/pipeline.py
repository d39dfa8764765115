"""Stored examples → batches, with grain. The batch for step s is a pure function of (seed, s).

The training loop resumes by asking for `start_step`; nothing about the data order is stored
in checkpoints. That works because the pipeline is random access end to end:

    examples [N] ─shuffle(seed, epoch)─▶ repeat forever ─▶ example stream [∞]
        ─▶ batch(B per host) ─▶ host h takes every H-th batch
        ─▶ read the rows, mask them keyed by (seed, stream position)

Global batch s is stream positions [s·G, (s+1)·G) with G = B·H, and host h's part of it is
[s·G + h·B, s·G + (h+1)·B): hosts read disjoint slices, their union is the global batch, and
the global batch does not depend on how many hosts there are. Each epoch is a different
permutation (grain's index shuffle, seeded by the epoch); batches run across epoch boundaries.
Dynamic masks are keyed by (seed, stream position) (see `masking.row_keys`), so an example
gets a fresh mask every time it is seen, and the same mask whenever a step is recomputed,
whatever the batch size or host count.

Batch contract (T = max_seq_len, P = max_predictions_per_seq, B = rows per host):

    input_ids              int32   [B, T]  masked input, pad_id after the real tokens
    input_mask             int32   [B, T]  1 real token, 0 padding
    segment_ids            int32   [B, T]  0 for [CLS] A [SEP], 1 for B [SEP]
    masked_lm_positions    int32   [B, P]  ascending; 0 in padding slots
    masked_lm_ids          int32   [B, P]  original token ids at those positions
    masked_lm_weights      float32 [B, P]  1.0 real prediction, 0.0 padding
    next_sentence_labels   int32   [B]     0 = IsNext, 1 = NotNext
    next_sentence_weights  float32 [B]     1.0 real row, 0.0 padding row (eval only)

With `config.data.packing` a train row holds up to K instances (bert/data/packing.py); then
next_sentence_labels and next_sentence_weights are [B, K] (weight 0 for an empty slot), masked
positions are row positions, and three more keys say where the instances are:

    position_ids           int32   [B, T]  restart at 0 at every instance's [CLS]
    pack_ids               int32   [B, T]  k on the k-th instance's tokens, 0 on padding
    nsp_positions          int32   [B, K]  each instance's [CLS]; 0 for an empty slot
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grain
import numpy as np

from bert.data.corpus import DataError
from bert.data.masking import (MaskedPositions, MaskingConfig, MaskVocabulary, apply_masks,
                                mask_batch, row_keys)
from bert.data.packing import pack_layout
from bert.data.records import PreparedData, SplitArrays

# Random streams, keyed by (seed, purpose, ...); records.STATIC_MASK_STREAM is 1.
SHUFFLE_STREAM = 2
DYNAMIC_MASK_STREAM = 3
EVAL_MASK_STREAM = 4

BATCH_KEYS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
              "masked_lm_weights", "next_sentence_labels", "next_sentence_weights")
PACKING_KEYS = ("position_ids", "pack_ids", "nsp_positions")

_PREFETCH_THREADS = 4  # batches assembled in parallel by grain's reader threads
_PREFETCH_BATCHES = 8


def per_host_batch_size(global_batch_size: int, process_count: int) -> int:
    """Rows each host loads; the global batch must split evenly (never silently multiplied)."""
    if global_batch_size < 1 or global_batch_size % process_count:
        raise DataError(f"config.batch_size={global_batch_size} is the global batch and must be "
                        f"a positive multiple of the number of hosts ({process_count})")
    return global_batch_size // process_count


class _BatchReader:
    """Gathers rows from the stored split and masks them, a whole batch at a time.

    Holds paths, not arrays: grain pickles it into worker processes, where the .npy files are
    memory-mapped again on first use instead of being copied through a pipe.
    """

    def __init__(self, split: SplitArrays, *, masking: str, mask: MaskingConfig,
                 vocab: MaskVocabulary, seed: int, mask_stream: int) -> None:
        self._directory: Path = split.directory
        self._split: SplitArrays | None = split
        self._masking = masking
        self._mask = mask
        self._vocab = vocab
        self._seed = seed
        self._mask_stream = mask_stream

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_split": None}

    @property
    def split(self) -> SplitArrays:
        if self._split is None:
            self._split = SplitArrays.load(self._directory)
        return self._split

    def __call__(self, tagged: np.ndarray) -> dict[str, np.ndarray]:
        """`tagged` [B, 2]: (stream position, example index) of each row, as grain batches it."""
        return self.read(tagged[:, 0], tagged[:, 1])

    def read(self, positions: np.ndarray, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The batch of rows `indices` [B]; dynamic masks are keyed by `positions` [B]."""
        split = self.split
        input_ids = np.asarray(split.input_ids[indices], dtype=np.int32)  # [B, T]
        lengths = np.asarray(split.lengths[indices])  # [B]
        if self._masking == "static":
            masks = MaskedPositions(
                positions=np.asarray(split.masked_lm_positions[indices]),  # [B, P]
                labels=np.asarray(split.masked_lm_ids[indices]),
                inputs=np.asarray(split.masked_lm_inputs[indices]),
                weights=np.asarray(split.masked_lm_weights[indices]))
        else:
            keys = row_keys(self._seed, self._mask_stream, positions)  # [B]
            masks = mask_batch(input_ids, lengths, keys, self._mask, self._vocab)
        seq_len = input_ids.shape[1]
        batch = {
            "input_ids": apply_masks(input_ids, masks.positions, masks.inputs, masks.weights),
            "input_mask": (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32),
            "segment_ids": np.asarray(split.segment_ids[indices], dtype=np.int32),
            "masked_lm_positions": masks.positions.astype(np.int32),
            "masked_lm_ids": masks.labels.astype(np.int32),
            "masked_lm_weights": masks.weights.astype(np.float32),
            "next_sentence_labels": np.asarray(split.next_sentence_labels[indices], np.int32),
            "next_sentence_weights": np.ones((len(indices),), np.float32),
        }
        if split.instance_lengths is not None:
            # Masking above already skips every packed instance's [CLS]/[SEP] (special ids)
            # and the padding after the last one (beyond `lengths`).
            layout = pack_layout(split.instance_lengths[indices], seq_len)
            batch["next_sentence_weights"] = layout.pop("nsp_weights")
            batch.update(layout)
        return batch


def _tag_with_position(position: int, index: int) -> np.ndarray:
    return np.array([position, index], dtype=np.int64)


def _check_host(batch_size_per_host: int, process_index: int, process_count: int) -> None:
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} is outside [0, {process_count})")
    if batch_size_per_host < 1:
        raise DataError(f"batch_size_per_host must be >= 1, got {batch_size_per_host}")


def _shuffle_seed(seed: int) -> int:
    # grain folds the epoch in as (seed + epoch), so hash the run seed first: run seeds 0 and 1
    # must not share permutations one epoch apart.
    return int(np.random.SeedSequence([seed, SHUFFLE_STREAM]).generate_state(1)[0])


def train_dataset(prepared: PreparedData, *, batch_size_per_host: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
    """Random-access view: `dataset[s]` is this host's batch for step s (s = 0, 1, ...)."""
    _check_host(batch_size_per_host, process_index, process_count)
    split = prepared.train
    if prepared.masking == "static" and not split.has_static_masks:
        raise DataError(f"{split.directory} holds no static masks; config.data.masking is "
                        "'static'")
    if len(split) < batch_size_per_host * process_count:
        raise DataError(f"the train split has {len(split)} examples, fewer than one global "
                        f"batch of {batch_size_per_host * process_count} (config.batch_size); "
                        "add text to config.data.train_files or raise config.data.dupe_factor")
    reader = _BatchReader(split, masking=prepared.masking, mask=prepared.mask,
                          vocab=prepared.vocab, seed=seed, mask_stream=DYNAMIC_MASK_STREAM)
    stream = (grain.MapDataset.range(len(split))  # example indices [N]
              .shuffle(seed=_shuffle_seed(seed))
              .repeat(None)  # [∞]: position p is epoch p // N, reshuffled per epoch
              .map_with_index(_tag_with_position))  # [∞] of (position, example index)
    batches = stream.batch(batch_size_per_host, drop_remainder=True)  # [∞] of [B, 2]
    return batches.slice(slice(process_index, None, process_count)).map(reader)


def train_batches(
    prepared: PreparedData,
    *,
    batch_size_per_host: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches for steps start_step, start_step + 1, ... forever.

    `num_workers > 0` assembles batches in that many grain worker processes; the batches are
    identical to `num_workers=0`, only produced in parallel.
    """
    if start_step < 0:
        raise DataError(f"start_step must be >= 0, got {start_step}")
    dataset = train_dataset(prepared, batch_size_per_host=batch_size_per_host, seed=seed,
                            process_index=process_index, process_count=process_count)
    iter_dataset = dataset.slice(slice(start_step, None)).to_iter_dataset(
        grain.ReadOptions(num_threads=_PREFETCH_THREADS,
                          prefetch_buffer_size=_PREFETCH_BATCHES))
    if num_workers > 0:
        _allow_grain_flags()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.multiprocessing.MultiprocessingOptions(num_workers=num_workers))
    return _plain_batches(iter(iter_dataset))


def _plain_batches(iterator: Iterator[dict[str, Any]]) -> Iterator[dict[str, np.ndarray]]:
    # Worker processes hand back shared-memory array subclasses; expose plain ndarrays and
    # close the iterator (and its workers) when the consumer stops.
    try:
        for batch in iterator:
            yield {key: np.asarray(batch[key]) for key in (*BATCH_KEYS, *PACKING_KEYS)
                   if key in batch}
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _allow_grain_flags() -> None:
    # grain's worker processes read absl flags; outside an absl app (tests, notebooks) they are
    # unparsed and reading them raises. Use their defaults then.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def eval_batches(
    prepared: PreparedData,
    *,
    batch_size_per_host: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """This host's share of the eval split, once, in order, with masks fixed by `seed`.

    Global eval batch b is rows [b·G, (b+1)·G); the last one is filled with padding rows whose
    weights (masked_lm_weights, next_sentence_weights) are 0, so metrics weighted by them are
    exact. Every host gets the same number of batches.
    """
    split = prepared.eval
    if split is None:
        raise DataError("no eval split: config.data.eval_files is empty")
    _check_host(batch_size_per_host, process_index, process_count)
    reader = _BatchReader(split, masking="dynamic", mask=prepared.mask, vocab=prepared.vocab,
                          seed=seed, mask_stream=EVAL_MASK_STREAM)
    global_batch = batch_size_per_host * process_count
    batches = []
    for batch_index in range(math.ceil(len(split) / global_batch)):
        first = batch_index * global_batch + process_index * batch_size_per_host
        rows = np.arange(first, min(first + batch_size_per_host, len(split)))
        batch = reader.read(rows, rows)  # eval masks are keyed by row number
        batches.append(_pad_rows(batch, batch_size_per_host, pad_id=prepared.pad_id))
    return batches


def _pad_rows(batch: dict[str, np.ndarray], rows: int, *, pad_id: int) -> dict[str, np.ndarray]:
    """Appends all-padding rows with zero weights: they add nothing to any weighted metric."""
    missing = rows - len(batch["next_sentence_weights"])
    padded = {}
    for key, value in batch.items():
        fill = pad_id if key == "input_ids" else 0
        padding = np.full((missing, *value.shape[1:]), fill, dtype=value.dtype)
        padded[key] = np.concatenate([value, padding])
    return padded


# Token frequencies for the unigram baseline come from at most this many training tokens, spread
# over the shards: a paper-scale corpus is not read whole before the first step.
UNIGRAM_SAMPLE_TOKENS = 1 << 24


def unigram_baseline(prepared: PreparedData,
                     batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Masked-LM loss and accuracy of a model that ignores context: every masked token is
    predicted from the training split's token frequencies (add-one smoothed, special tokens
    excluded; the first rows of every shard, UNIGRAM_SAMPLE_TOKENS in all, or the whole split if
    smaller), scored on `batches`' targets with their weights. A pretrained model below this
    loss uses its context; one at it sits on the "unigram plateau"."""
    vocab = prepared.vocab
    shards = prepared.train.input_ids.shards
    rows_per_shard = max(1, UNIGRAM_SAMPLE_TOKENS // (len(shards) * shards[0].shape[1]))
    counts = np.zeros(vocab.vocab_size, np.float64)
    for shard in shards:  # one shard at a time: memory stays flat
        counts += np.bincount(np.asarray(shard[:rows_per_shard]).ravel(),
                              minlength=vocab.vocab_size)
    counts = np.where(vocab.is_special, 0.0, counts + 1.0)
    log_p = np.full(vocab.vocab_size, -np.inf)  # special tokens are never a target
    log_p[~vocab.is_special] = np.log(counts[~vocab.is_special] / counts.sum())
    ids = np.concatenate([b["masked_lm_ids"].ravel() for b in batches])
    weights = np.concatenate([b["masked_lm_weights"].ravel() for b in batches])
    scored = weights > 0  # padding slots hold special ids, whose probability is 0
    ids, weights = ids[scored], weights[scored]
    if not len(ids):
        raise DataError("the eval batches hold no masked positions to score")
    return {"unigram_mlm_loss": float(-(log_p[ids] * weights).sum() / weights.sum()),
            "unigram_mlm_accuracy": float(((ids == np.argmax(log_p)) * weights).sum()
                                          / weights.sum())}
