"""Frozen contextual features of chosen encoder layers for each line of a text file.

    python -m bert.features --checkpoint MODEL_DIR --input lines.txt --output out.npz [--layers=-1,-2]

Each line is one sentence, or a pair written "first ||| second", tokenized as the model was
trained: [CLS] first [SEP] (second [SEP]) with segment ids 0 / 1. `out.npz` holds

    input_ids    int32   [N, T]   padded with [PAD]
    segment_ids  int32   [N, T]
    mask         int32   [N, T]   1 on real tokens
    layer_<k>    float32 [N, T, H] one per requested k, named as requested

where layer 0 is the embedding output, layer i the output of block i, and negative k counts from
the top (-1 is the last block). T is the longest tokenized line, capped by --max_seq_len (default:
the model's position table); longer lines are truncated, longest segment first, with a warning.
Features at padded positions (mask 0) are zero. Row n is line n of the input, blank lines included,
so outputs stay aligned with the file.

MODEL_DIR is a model folder or a pretraining work directory.
"""
from __future__ import annotations

from bert.allocator import reexec_with_tuned_allocator

if __name__ == "__main__":  # before the heavy imports, which a restart would repeat
    reexec_with_tuned_allocator()

import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from tqdm import tqdm

from bert import checkpoint
from bert.model import BertConfig, BertModel
from bert.tokenizer import Tokenizer, load_tokenizer

PAIR_SEPARATOR = " ||| "
# Batches are padded to a multiple of this many tokens: few distinct shapes to compile, little waste.
_LENGTH_BUCKET = 16


def resolve_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Absolute indices into (embeddings, block 1, ..., block L) for the requested layers."""
    resolved = []
    for k in layers:
        if not -(num_layers + 1) <= k <= num_layers:
            raise ValueError(f"--layers: layer {k} does not exist in a {num_layers}-layer model "
                             f"(valid: {-(num_layers + 1)}..{num_layers})")
        resolved.append(k % (num_layers + 1))
    return resolved


def _truncate_pair(first: list[int], second: list[int], budget: int) -> bool:
    """Drop tokens from the end of the longer segment until both fit; True if anything went.

    Ties shorten the second segment, as the original BERT's `_truncate_seq_pair` does.
    """
    truncated = False
    while len(first) + len(second) > budget:
        longer = first if len(first) > len(second) else second
        longer.pop()
        truncated = True
    return truncated


def tokenize_lines(tokenizer: Tokenizer, lines: Sequence[str],
                   max_seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """input_ids, segment_ids, mask, all int32 [N, T], and how many lines were truncated.

    T is the longest tokenized line, at most `max_seq_len`.
    """
    firsts, seconds = [], []
    for line in lines:
        first, sep, second = line.partition(PAIR_SEPARATOR)
        firsts.append(first)
        seconds.append(second if sep else None)
    first_ids = tokenizer.encode_batch(firsts)
    pairs = [i for i, s in enumerate(seconds) if s is not None]
    second_ids: list[list[int] | None] = [None] * len(lines)
    for i, ids in zip(pairs, tokenizer.encode_batch([seconds[i] for i in pairs])):
        second_ids[i] = ids

    sequences, segments, truncated = [], [], 0
    for first, second in zip(first_ids, second_ids):
        if second is None:
            cut = len(first) > max_seq_len - 2
            first = first[: max_seq_len - 2]
            tokens = [tokenizer.cls_id, *first, tokenizer.sep_id]
            segment = [0] * len(tokens)
        else:
            first, second = list(first), list(second)
            cut = _truncate_pair(first, second, max_seq_len - 3)
            tokens = [tokenizer.cls_id, *first, tokenizer.sep_id, *second, tokenizer.sep_id]
            segment = [0] * (len(first) + 2) + [1] * (len(second) + 1)
        truncated += cut
        sequences.append(tokens)
        segments.append(segment)

    length = max((len(s) for s in sequences), default=2)
    input_ids = np.full((len(lines), length), tokenizer.pad_id, np.int32)
    segment_ids = np.zeros((len(lines), length), np.int32)
    mask = np.zeros((len(lines), length), np.int32)
    for row, (tokens, segment) in enumerate(zip(sequences, segments)):
        input_ids[row, : len(tokens)] = tokens
        segment_ids[row, : len(tokens)] = segment
        mask[row, : len(tokens)] = 1
    return input_ids, segment_ids, mask, truncated


def extract_features(config: BertConfig, tokenizer: Tokenizer, encoder_params: Any,
                     lines: Sequence[str], layers: Sequence[int], *, batch_size: int = 32,
                     max_seq_len: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """The arrays of out.npz for `lines` (see the module docstring); `encoder_params` = params["bert"]."""
    if batch_size < 1:
        raise ValueError(f"--batch_size must be positive, got {batch_size}")
    limit = config.max_position_embeddings if max_seq_len is None else max_seq_len
    if not 3 <= limit <= config.max_position_embeddings:
        raise ValueError(f"--max_seq_len={limit} must lie in 3..{config.max_position_embeddings} "
                         f"(the model's position table)")
    absolute = resolve_layers(layers, config.num_layers)
    input_ids, segment_ids, mask, truncated = tokenize_lines(tokenizer, lines, limit)
    if truncated:
        logging.warning("%d of %d lines were longer than %d tokens and were truncated",
                        truncated, len(lines), limit)
    num_lines, length = input_ids.shape
    features = np.zeros((len(absolute), num_lines, length, config.hidden_size), np.float32)
    for start, stop, hidden in encoded_batches(config, encoder_params, input_ids, segment_ids, mask,
                                               absolute, batch_size=batch_size, progress=progress):
        features[:, start:stop, :hidden.shape[2]] = hidden
    arrays = {"input_ids": input_ids, "segment_ids": segment_ids, "mask": mask}
    for k, layer_features in zip(layers, features):
        arrays[f"layer_{k}"] = layer_features
    return arrays


@functools.lru_cache(maxsize=8)  # one compiled function per model and layers, across calls
def _layers_encoder(config: BertConfig, layers: tuple[int, ...]) -> Callable:
    model = BertModel(config)

    @jax.jit
    def encode(params: Any, ids: jax.Array, segments: jax.Array, input_mask: jax.Array) -> jax.Array:
        out = model.apply({"params": params}, ids, segments, input_mask,
                          output_hidden_states=True)
        chosen = jnp.stack([out.hidden_states[k] for k in layers])  # (K, B, T, H)
        return jnp.where(input_mask[None, :, :, None] > 0, chosen.astype(jnp.float32), 0.0)

    return encode


def encoded_batches(config: BertConfig, encoder_params: Any, input_ids: np.ndarray,
                    segment_ids: np.ndarray, mask: np.ndarray, layers: Sequence[int], *,
                    batch_size: int = 32, progress: bool = True
                    ) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, float32 [K, stop - start, width, H]) for consecutive rows [start, stop):
    the hidden states of `layers` (absolute indices) of those rows of the [N, T] token arrays,
    zero at padding. `width` is the batch's longest row rounded up to a multiple of 16."""
    num_lines, length = input_ids.shape
    encode = _layers_encoder(config, tuple(layers))
    starts = range(0, num_lines, batch_size)
    for start in tqdm(starts, desc="features", unit="batch", disable=not progress or len(starts) < 2):
        stop = min(start + batch_size, num_lines)
        # Pad the batch to a full batch and a bucketed length, so only a few shapes compile.
        used = int(mask[start:stop].sum(axis=1).max())
        width = min(length, -(-used // _LENGTH_BUCKET) * _LENGTH_BUCKET)
        rows = np.arange(start, start + batch_size).clip(max=num_lines - 1)
        batch = [a[rows, :width] for a in (input_ids, segment_ids, mask)]
        yield start, stop, np.asarray(encode(encoder_params, *batch))[:, : stop - start]


def read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 file without their line endings; an unreadable file names itself."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not lines:
        raise ValueError(f"{path} is empty: nothing to extract features for")
    return lines


def write_features(checkpoint_dir: str, input_path: str, output_path: str, layers: Sequence[int],
                   *, batch_size: int = 32, max_seq_len: int | None = None) -> None:
    """The whole CLI job: read the model and lines, extract, write out.npz atomically."""
    config = checkpoint.read_model_config(checkpoint_dir)
    resolve_layers(layers, config.num_layers)  # fail before the params are read
    tokenizer = load_tokenizer(os.path.join(checkpoint_dir, checkpoint.TOKENIZER_DIR))
    lines = read_lines(input_path)
    encoder_params = checkpoint.load_params(checkpoint_dir)["bert"]
    arrays = extract_features(config, tokenizer, encoder_params, lines, layers,
                              batch_size=batch_size, max_seq_len=max_seq_len)
    tmp = output_path + ".partial"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, output_path)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Only when run as a command (other CLIs share flag names like --output)."""
    flags.DEFINE_string("checkpoint", None, "Model folder or pretraining work directory.")
    flags.DEFINE_string("input", None, "UTF-8 text, one sentence or 'first ||| second' pair per line.")
    flags.DEFINE_string("output", None, "The .npz file to write.")
    flags.DEFINE_list("layers", ["-1", "-2", "-3", "-4"],
                      "Layers to keep: 0 embeddings, i block i, negative from the top.")
    flags.DEFINE_integer("batch_size", 32, "Lines per forward pass.")
    flags.DEFINE_integer("max_seq_len", None, "Cap on T; default: the model's max_position_embeddings.")
    flags.mark_flags_as_required(["checkpoint", "input", "output"])


def main(argv: list[str]) -> None:
    del argv
    try:
        layers = [int(k) for k in FLAGS.layers]
    except ValueError:
        raise app.UsageError(f"--layers must be comma-separated integers, got {FLAGS.layers}")
    try:
        write_features(FLAGS.checkpoint, FLAGS.input, FLAGS.output, layers,
                       batch_size=FLAGS.batch_size, max_seq_len=FLAGS.max_seq_len)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
