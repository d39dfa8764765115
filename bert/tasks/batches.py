"""Batches of fine-tuning features: epochs as one stream, length buckets, padded evaluation.

Features are a dict of numpy arrays with a leading row axis, token arrays padded to
max_seq_len on their last axis. Training batch s (1-based) is rows [(s-1)·B, s·B) of the
stream "epoch 0's permutation, epoch 1's permutation, ..." where epoch e's permutation is a
function of (seed, e) alone, as in the original recipe's repeat-then-shuffle. So the batch of
every step, its length bucket and its micro-batches are functions of (seed, step): every
process computes the same global plan and takes its own contiguous rows, and a resumed run
continues exactly.

Each batch is cut to the shortest length bucket that holds its longest row (a few compiled
shapes instead of always max_seq_len). Evaluation sorts rows by length so that most batches
take a short bucket, pads the last batch with zero-weight rows, and keeps every real row.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Sequence

import numpy as np

Features = Mapping[str, np.ndarray]

EXAMPLE_WEIGHTS = "example_weights"
SHUFFLE_STREAM = 11  # folded with (seed, epoch); distinct from the pretraining streams


def row_lengths(features: Features) -> np.ndarray:
    """Real tokens per row (the longest choice for multiple-choice rows)."""
    mask = features["input_mask"]
    lengths = mask.reshape(mask.shape[0], -1, mask.shape[-1]).sum(-1).max(-1)
    return lengths.astype(np.int64)


def _bucket(length: int, buckets: Sequence[int]) -> int:
    for bucket in buckets:
        if length <= bucket:
            return bucket
    return buckets[-1]


def take_rows(features: Features, rows: np.ndarray, length: int, max_seq_len: int,
              weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`rows` of every array, token axes cut to `length`, with example_weights (1 by default).

    The token axis is input_mask's last axis: arrays with more axes (per-word vectors) keep
    theirs after it uncut."""
    axis = features["input_mask"].ndim - 1
    batch = {}
    for key, value in features.items():
        value = value[rows]
        if value.ndim > axis >= 1 and value.shape[axis] == max_seq_len:
            value = value[(slice(None),) * axis + (slice(None, length),)]
        batch[key] = value
    batch[EXAMPLE_WEIGHTS] = (np.ones(len(rows), np.float32) if weights is None
                              else weights.astype(np.float32))
    return batch


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """Which rows, at which length, make up every global training batch."""

    num_rows: int
    batch_size: int  # global
    num_epochs: float
    seed: int
    buckets: tuple[int, ...]

    @property
    def steps(self) -> int:
        """Optimizer steps, as the original recipe counts them (the last partial batch dropped)."""
        return int(self.num_rows / self.batch_size * self.num_epochs)

    def epoch_end_steps(self) -> tuple[int, ...]:
        """The step in which each whole epoch's last row is consumed (the last: `steps`)."""
        ends = {min(self.steps, -(-(e + 1) * self.num_rows // self.batch_size))
                for e in range(int(np.ceil(self.num_epochs)))}
        return tuple(sorted(s for s in ends if s >= 1))

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, SHUFFLE_STREAM, epoch])
        return rng.permutation(self.num_rows)

    def global_rows(self, step: int) -> np.ndarray:
        """Row indices of the global batch of `step` (1-based)."""
        start = (step - 1) * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        epochs = positions // self.num_rows
        rows = np.empty(self.batch_size, np.int64)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            rows[chosen] = self._permutation(int(epoch))[positions[chosen] % self.num_rows]
        return rows


def train_batches(features: Features, plan: TrainPlan, *, start_step: int, max_seq_len: int,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the global batches of steps start_step + 1 .. plan.steps."""
    lengths = row_lengths(features)
    per_host = plan.batch_size // process_count
    for step in range(start_step + 1, plan.steps + 1):
        rows = plan.global_rows(step)
        length = _bucket(int(lengths[rows].max()), plan.buckets)
        mine = rows[process_index * per_host:(process_index + 1) * per_host]
        yield take_rows(features, mine, length, max_seq_len)


@dataclasses.dataclass(frozen=True)
class EvalBatch:
    rows: np.ndarray  # feature rows of the global batch; -1 marks a padding row
    host_batch: dict[str, np.ndarray]  # this process's part


def eval_batches(features: Features, *, batch_size: int, buckets: Sequence[int],
                 max_seq_len: int, process_index: int = 0, process_count: int = 1
                 ) -> Iterator[EvalBatch]:
    """Every row once, shortest first, in global batches of `batch_size`; the last batch is
    padded with copies of row 0 at weight 0 (their predictions are dropped by `rows` = -1)."""
    lengths = row_lengths(features)
    order = np.argsort(lengths, kind="stable")
    per_host = batch_size // process_count
    for start in range(0, len(order), batch_size):
        real = order[start:start + batch_size]
        rows = np.concatenate([real, np.full(batch_size - len(real), -1, np.int64)])
        weights = (rows >= 0).astype(np.float32)
        length = _bucket(int(lengths[real].max()), buckets)
        mine = slice(process_index * per_host, (process_index + 1) * per_host)
        yield EvalBatch(rows, take_rows(features, np.maximum(rows, 0)[mine], length,
                                        max_seq_len, weights[mine]))


def gather_predictions(batches: Sequence[tuple[np.ndarray, Mapping[str, np.ndarray]]],
                       num_rows: int) -> dict[str, np.ndarray]:
    """Per-batch (rows, predictions of the global batch) -> predictions in row order.

    Predictions with a token axis come back at their batch's bucket length; they are padded
    to the longest bucket so every row has the same shape."""
    keys = batches[0][1].keys() if batches else ()
    out: dict[str, np.ndarray] = {}
    for key in keys:
        parts = [np.asarray(p[key]) for _, p in batches]
        width = max(p.shape[-1] for p in parts) if parts[0].ndim >= 2 else None
        first = parts[0]
        shape = (num_rows, *first.shape[1:-1], width) if width is not None else (num_rows, *first.shape[1:])
        merged = np.zeros(shape, first.dtype)
        for (rows, _), part in zip(batches, parts):
            real = rows >= 0
            if width is not None:
                merged[rows[real], ..., :part.shape[-1]] = part[real]
            else:
                merged[rows[real]] = part[real]
        out[key] = merged
    return out
