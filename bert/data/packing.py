"""Sequence packing: several whole NSP instances per row, so short ones do not pay for padding.

A packed row holds up to K = `max_instances_per_pack` complete instances back to back, each
`[CLS] A [SEP] B [SEP]` with its own segment ids, then padding:

    [CLS] A1 [SEP] B1 [SEP] [CLS] A2 [SEP] B2 [SEP] [PAD] ...
    pack_ids       1 1 ... 1 1    2 2 ... 2 2       0 ...   which instance a token belongs to
    position_ids   0 1 ... 9 10   0 1 ... 7 8       0 ...   restart at every [CLS]

The model lets a token attend only to tokens with the same pack id and reads each instance's
NSP prediction at its own [CLS] (`nsp_positions`), so every instance is computed exactly as if it
had a row to itself (tests/test_packing.py). Masked positions are row positions; a packed row
never holds more real tokens than a full unpacked row, so `max_predictions_per_seq` bounds its
masks exactly as it bounds an unpacked row's.

The packer is best-fit decreasing: instances longest first (ties in a seeded random order, so
which short instances share a row does not follow document order), each into the open row with
the least room that still fits it, else a new row. Rooms are bucketed by size, so finding that
row is a bisection over at most T sizes, not a scan over rows.
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np

from bert.data.instances import Instances

PACKING_STREAM = 5  # random stream of the packer's tie order (see records/pipeline streams)


@dataclasses.dataclass(frozen=True)
class PackedInstances:
    """Rows of up to K instances each; slots after a row's last instance are empty (length 0)."""

    input_ids: np.ndarray  # int32 [R, T]
    segment_ids: np.ndarray  # int8 [R, T], each instance's own 0/1, 0 for padding
    lengths: np.ndarray  # int32 [R], real tokens per row (all instances together)
    instance_lengths: np.ndarray  # int32 [R, K], 0 for an empty slot
    next_sentence_labels: np.ndarray  # int32 [R, K], 0 for an empty slot

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def pack_indices(lengths: np.ndarray, *, max_seq_len: int, max_instances: int,
                 seed: int, shard: tuple[int, ...] = ()) -> np.ndarray:
    """int64 [R, K]: which instances share each row (-1 for an empty slot); every instance
    appears exactly once, rows hold at most `max_seq_len` tokens and `max_instances` instances.
    `shard` (e.g. part and duplicate) keys the tie order of separately packed groups.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.max() > max_seq_len or lengths.min() < 1):
        raise ValueError(f"instance lengths must be in [1, {max_seq_len}]")
    tie_order = np.random.default_rng([seed, PACKING_STREAM, *shard]).permutation(len(lengths))
    order = np.lexsort((tie_order, -lengths)).tolist()  # longest first
    smallest = int(lengths.min()) if len(lengths) else 1
    rows: list[list[int]] = []
    open_rows: dict[int, list[int]] = {}  # room left -> rows with that room and a free slot
    rooms: list[int] = []  # sorted keys of open_rows
    sizes = lengths.tolist()
    for index in order:
        size = sizes[index]
        at = bisect.bisect_left(rooms, size)
        if at == len(rooms):
            row, room = len(rows), max_seq_len
            rows.append([])
        else:
            room = rooms[at]
            row = open_rows[room].pop()
            if not open_rows[room]:
                del open_rows[room]
                rooms.pop(at)
        rows[row].append(index)
        room -= size
        if len(rows[row]) < max_instances and room >= smallest:
            if room not in open_rows:
                open_rows[room] = []
                bisect.insort(rooms, room)
            open_rows[room].append(row)
    packs = np.full((len(rows), max_instances), -1, dtype=np.int64)
    for row, members in enumerate(rows):
        packs[row, :len(members)] = members
    return packs


def pack(instances: Instances, packs: np.ndarray, *, pad_id: int,
         chunk_rows: int = 16384) -> PackedInstances:
    """Lays the instances of each row of `packs` [R, K] (from `pack_indices`) side by side."""
    num_rows, slots = packs.shape
    seq_len = instances.input_ids.shape[1]
    real = packs >= 0  # [R, K]
    instance_lengths = np.where(real, instances.lengths[np.maximum(packs, 0)], 0).astype(np.int32)
    labels = np.where(real, instances.next_sentence_labels[np.maximum(packs, 0)], 0)
    input_ids = np.full((num_rows, seq_len), pad_id, dtype=np.int32)
    segment_ids = np.zeros((num_rows, seq_len), dtype=np.int8)
    for first in range(0, num_rows, chunk_rows):
        rows = np.arange(first, min(first + chunk_rows, num_rows))
        row_lengths = instance_lengths[rows]  # [n, K]
        offsets = np.cumsum(row_lengths, axis=1) - row_lengths  # [n, K]: where each one starts
        # One entry per copied token: (row, slot, position inside its instance).
        row_of, slot_of = np.nonzero(row_lengths > 0)
        counts = row_lengths[row_of, slot_of]
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        row_of, slot_of = np.repeat(row_of, counts), np.repeat(slot_of, counts)
        source = packs[rows[row_of], slot_of]
        target = offsets[row_of, slot_of] + within
        input_ids[rows[row_of], target] = instances.input_ids[source, within]
        segment_ids[rows[row_of], target] = instances.segment_ids[source, within]
    return PackedInstances(input_ids, segment_ids, instance_lengths.sum(axis=1).astype(np.int32),
                           instance_lengths, labels.astype(np.int32))


def pack_layout(instance_lengths: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    """Per-token pack ids and positions, and the [CLS] positions, of packed rows.

    instance_lengths [B, K] -> pack_ids int32 [B, T] (k for the k-th instance, 0 for padding),
    position_ids int32 [B, T] (0 at every instance's [CLS], 0 for padding), nsp_positions
    int32 [B, K] (each instance's [CLS]; 0 for an empty slot) and nsp_weights float32 [B, K].
    """
    instance_lengths = np.asarray(instance_lengths, dtype=np.int64)
    ends = np.cumsum(instance_lengths, axis=1)  # [B, K]
    starts = ends - instance_lengths
    position = np.arange(seq_len)  # [T]
    inside = position[None, :] < ends[:, -1:]  # [B, T]: not padding
    # Slots ending at or before t; empty slots only follow the real ones, so this is t's slot.
    slot = (position[None, :, None] >= ends[:, None, :]).sum(axis=-1)  # [B, T]
    slot = np.minimum(slot, instance_lengths.shape[1] - 1)
    own_start = np.take_along_axis(starts, slot, axis=1)  # [B, T]
    real = instance_lengths > 0
    return {
        "pack_ids": np.where(inside, slot + 1, 0).astype(np.int32),
        "position_ids": np.where(inside, position[None, :] - own_start, 0).astype(np.int32),
        "nsp_positions": np.where(real, starts, 0).astype(np.int32),
        "nsp_weights": real.astype(np.float32),
    }
