"""Masked-language-model masking of whole batches (numpy; used statically and dynamically).

The recipe of the BERT paper: choose mask_prob of the maskable tokens (never [CLS], [SEP],
[PAD], [UNK] or [MASK]), at most max_predictions_per_seq of them; of the chosen, replace
mask_token_ratio with [MASK], random_token_ratio with a random non-special token and keep the
rest unchanged. With whole-word masking, whole words are chosen (a word = a token that starts a
word plus the continuation tokens after it) and a word that would overflow the budget is skipped.

Randomness is counter-based: every draw is a hash of (row key, purpose, position), and a row's
key is a hash of (seed, stream, row number). So a row's masks depend on nothing but its key,
whichever batch it lands in, and a batch of 256 rows is masked with a handful of vectorized
numpy calls instead of 256 Python-level generator set-ups: 31k instead of 3.5k rows/s of
length 128 on one CPU core, which matters because the input pipeline masks every step.
"Choose k of C candidates uniformly" is done as "the k candidates with the smallest uniform
scores", which is the same distribution.

The result is a `MaskedPositions`: what the model must predict where, padded to
max_predictions_per_seq with weight 0. `apply_masks` writes it into the input ids.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from bert.data.corpus import DataError
from bert.tokenizer import Tokenizer, special_ids

# Purposes of the per-position draws, mixed into the hash so they are independent.
_CHOOSE, _DECIDE, _REPLACE = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """Masking settings; validated on construction with errors naming the config key."""

    max_predictions_per_seq: int  # P: masked positions per row, padded
    mask_prob: float = 0.15  # fraction of maskable tokens to predict
    mask_token_ratio: float = 0.8  # of the predicted: shown as [MASK]
    random_token_ratio: float = 0.1  # of the predicted: shown as a random token
    keep_token_ratio: float = 0.1  # of the predicted: shown unchanged
    whole_word_mask: bool = False  # choose whole words rather than single tokens

    def __post_init__(self) -> None:
        if int(self.max_predictions_per_seq) < 1:
            raise DataError(f"config.max_predictions_per_seq: must be >= 1, "
                            f"got {self.max_predictions_per_seq}")
        if not 0.0 < self.mask_prob < 1.0:
            raise DataError(f"config.data.mask_prob: must be in (0, 1), got {self.mask_prob}")
        ratios = {"mask_token_ratio": self.mask_token_ratio,
                  "random_token_ratio": self.random_token_ratio,
                  "keep_token_ratio": self.keep_token_ratio}
        for key, value in ratios.items():
            if not 0.0 <= value <= 1.0:
                raise DataError(f"config.data.{key}: must be in [0, 1], got {value}")
        if not math.isclose(sum(ratios.values()), 1.0, abs_tol=1e-6):
            raise DataError(
                "config.data.mask_token_ratio: with random_token_ratio and keep_token_ratio it "
                f"must sum to 1, got {self.mask_token_ratio} + {self.random_token_ratio} + "
                f"{self.keep_token_ratio} = {sum(ratios.values())}")


@dataclasses.dataclass(frozen=True, eq=False)
class MaskVocabulary:
    """What masking needs from the tokenizer; plain arrays so that it pickles to workers."""

    vocab_size: int
    mask_id: int
    special_ids: tuple[int, ...]  # never chosen for prediction, never drawn as random tokens
    word_starts: np.ndarray  # bool [vocab_size]

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> MaskVocabulary:
        return cls(vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
                   special_ids=special_ids(tokenizer),
                   word_starts=np.asarray(tokenizer.word_start_mask(), dtype=bool))

    @functools.cached_property
    def is_special(self) -> np.ndarray:
        special = np.zeros((self.vocab_size,), dtype=bool)  # [V]
        special[list(self.special_ids)] = True
        return special

    @functools.cached_property
    def replacement_ids(self) -> np.ndarray:
        return np.flatnonzero(~self.is_special).astype(np.int32)  # [V - specials]


@dataclasses.dataclass(frozen=True)
class MaskedPositions:
    """Prediction targets of one row ([P]) or a batch ([B, P]), padded with weight 0."""

    positions: np.ndarray  # int32 [..., P], ascending among real entries, 0 in padding
    labels: np.ndarray  # int32 [..., P], the original token ids (masked_lm_ids)
    inputs: np.ndarray  # int32 [..., P], what the input shows: [MASK], random, or original
    weights: np.ndarray  # float32 [..., P], 1.0 real, 0.0 padding


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective uint64 hash with full avalanche."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_keys(seed: int, stream: int, rows: np.ndarray | int) -> np.ndarray:
    """uint64 [...] keys of rows `rows` of random stream `stream` under `seed`."""
    # 1-element arrays, not scalars: numpy wraps uint64 arrays silently but warns on scalars.
    base = _mix(_mix(np.array([seed], dtype=np.uint64)) ^ np.uint64(stream))  # [1]
    rows = np.asarray(rows, dtype=np.uint64)
    return _mix(base ^ rows.reshape(-1)).reshape(rows.shape)


def _uniform(keys: np.ndarray, purpose: int, positions: np.ndarray) -> np.ndarray:
    """float64 [B, K] in [0, 1): the draw for `purpose` at each position of each row."""
    salted = _mix(keys ^ np.uint64(purpose))[:, None]  # [B, 1]
    bits = _mix(salted ^ positions.astype(np.uint64))  # [B, K]
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def mask_batch(input_ids: np.ndarray, lengths: np.ndarray, keys: np.ndarray,
               config: MaskingConfig, vocab: MaskVocabulary) -> MaskedPositions:
    """Chooses what to predict in each row of `input_ids` [B, T] (real tokens: `lengths` [B]).

    Row b's choices are a pure function of (input_ids[b], lengths[b], keys[b], config, vocab).
    """
    input_ids = np.asarray(input_ids)
    batch, seq_len = input_ids.shape
    size = config.max_predictions_per_seq
    arange = np.arange(seq_len)
    candidate = (arange[None, :] < np.asarray(lengths)[:, None]) & ~vocab.is_special[input_ids]
    count = candidate.sum(axis=1)  # [B]
    budget = np.where(count > 0, np.minimum(size, np.maximum(
        1, np.rint(count * config.mask_prob).astype(np.int64))), 0)  # [B]
    draws = _uniform(keys, _CHOOSE, np.broadcast_to(arange, (batch, seq_len)))  # [B, T]
    scores = np.where(candidate, draws, 2.0)  # non-candidates sort last
    if config.whole_word_mask:
        chosen = _whole_words(input_ids, candidate, scores, budget, vocab)
    else:  # the `budget` lowest-scoring candidates of each row
        kth = np.take_along_axis(np.sort(scores, axis=1),
                                 np.maximum(budget - 1, 0)[:, None], axis=1)  # [B, 1]
        chosen = candidate & (scores <= kth) & (budget[:, None] > 0)
    # Chosen positions first, ascending; then padding slots (filled with seq_len, zeroed below).
    ordered = np.sort(np.where(chosen, arange[None, :], seq_len), axis=1)[:, :size]  # [B, <=P]
    if ordered.shape[1] < size:
        ordered = np.pad(ordered, ((0, 0), (0, size - ordered.shape[1])),
                         constant_values=seq_len)
    real = ordered < seq_len  # [B, P]
    positions = np.where(real, ordered, 0)
    labels = np.take_along_axis(input_ids, positions, axis=1)
    decide = _uniform(keys, _DECIDE, positions)  # [B, P]
    pick = _uniform(keys, _REPLACE, positions)
    random_tokens = vocab.replacement_ids[(pick * len(vocab.replacement_ids)).astype(np.int64)]
    shown = np.where(decide < config.mask_token_ratio, vocab.mask_id,
                     np.where(decide < config.mask_token_ratio + config.random_token_ratio,
                              random_tokens, labels))
    return MaskedPositions(
        positions=positions.astype(np.int32),
        labels=np.where(real, labels, 0).astype(np.int32),
        inputs=np.where(real, shown, 0).astype(np.int32),
        weights=real.astype(np.float32))


def _whole_words(input_ids: np.ndarray, candidate: np.ndarray, scores: np.ndarray,
                 budget: np.ndarray, vocab: MaskVocabulary) -> np.ndarray:
    """bool [B, T]: whole words in score order until the budget, skipping ones that overflow."""
    # A candidate opens a word if its token starts one or the token before is no candidate
    # (it follows [CLS]/[SEP]). A word's score is the score of its first token.
    previous = np.pad(candidate[:, :-1], ((0, 0), (1, 0)))
    opens = candidate & (vocab.word_starts[input_ids] | ~previous)  # [B, T]
    word_of = np.cumsum(opens, axis=1) - 1  # [B, T]: word index of each token
    chosen = np.zeros_like(candidate)
    for row in range(input_ids.shape[0]):
        starts = np.flatnonzero(opens[row])  # [W]
        sizes = np.bincount(word_of[row][candidate[row]], minlength=len(starts))  # [W]
        taken, total = [], 0
        for word in np.argsort(scores[row, starts], kind="stable"):
            if total >= budget[row]:
                break
            if total + sizes[word] <= budget[row]:
                taken.append(word)
                total += sizes[word]
        chosen[row] = candidate[row] & np.isin(word_of[row], taken)
    return chosen


def choose_masks(input_ids: np.ndarray, length: int, key: int | np.ndarray,
                 config: MaskingConfig, vocab: MaskVocabulary) -> MaskedPositions:
    """`mask_batch` for one row `input_ids` [T]; returns [P] arrays."""
    masks = mask_batch(np.asarray(input_ids)[None, :], np.array([length]),
                       np.asarray(key, dtype=np.uint64).reshape(1), config, vocab)
    return MaskedPositions(*(getattr(masks, f.name)[0] for f in dataclasses.fields(masks)))


def apply_masks(input_ids: np.ndarray, positions: np.ndarray, inputs: np.ndarray,
                weights: np.ndarray) -> np.ndarray:
    """Returns a copy of `input_ids` [..., T] with `inputs` [..., P] written at `positions`.

    Padding entries (weight 0) are left alone, so position 0 ([CLS]) is never overwritten.
    """
    masked = np.array(input_ids, dtype=np.int32)  # [..., T], a fresh contiguous copy
    flat = masked.reshape(-1, masked.shape[-1])  # [N, T], a view into `masked`
    positions = positions.reshape(flat.shape[0], positions.shape[-1])  # [N, P]
    rows, slots = np.nonzero(weights.reshape(positions.shape) > 0)
    flat[rows, positions[rows, slots]] = inputs.reshape(positions.shape)[rows, slots]
    return masked
