"""Masked-language-model masking of one instance (numpy; used statically and dynamically).

The recipe of the BERT paper: choose mask_prob of the maskable tokens (never [CLS], [SEP],
[PAD], [UNK] or [MASK]), at most max_predictions_per_seq of them; of the chosen, replace
mask_token_ratio with [MASK], random_token_ratio with a random non-special token and keep the
rest unchanged. With whole-word masking, whole words are chosen (a word = a token that starts a
word plus the continuation tokens after it) and a word that would overflow the budget is skipped.

The result is a `MaskedPositions`: what the model must predict where, padded to
max_predictions_per_seq with weight 0. `apply_masks` writes it into the input ids. Static
masking stores these arrays once; dynamic masking draws them per example and epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from bert.data.corpus import DataError
from bert.tokenizer import Tokenizer, special_ids


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
            raise DataError(f"config.max_predictions_per_seq must be >= 1, "
                            f"got {self.max_predictions_per_seq}")
        if not 0.0 < self.mask_prob < 1.0:
            raise DataError(f"config.data.mask_prob must be in (0, 1), got {self.mask_prob}")
        ratios = {"mask_token_ratio": self.mask_token_ratio,
                  "random_token_ratio": self.random_token_ratio,
                  "keep_token_ratio": self.keep_token_ratio}
        for key, value in ratios.items():
            if not 0.0 <= value <= 1.0:
                raise DataError(f"config.data.{key} must be in [0, 1], got {value}")
        if not math.isclose(sum(ratios.values()), 1.0, abs_tol=1e-6):
            raise DataError(
                "config.data.mask_token_ratio + random_token_ratio + keep_token_ratio must sum "
                f"to 1, got {self.mask_token_ratio} + {self.random_token_ratio} + "
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
    """One row's prediction targets, padded to P with weight 0."""

    positions: np.ndarray  # int32 [P], ascending among real entries, 0 in padding
    labels: np.ndarray  # int32 [P], the original token ids (masked_lm_ids)
    inputs: np.ndarray  # int32 [P], what the input shows there: [MASK], random, or original
    weights: np.ndarray  # float32 [P], 1.0 real, 0.0 padding


def choose_masks(input_ids: np.ndarray, length: int, rng: np.random.Generator,
                 config: MaskingConfig, vocab: MaskVocabulary) -> MaskedPositions:
    """Chooses the positions to predict in `input_ids[:length]` and what to show there."""
    tokens = np.asarray(input_ids[:length])  # [L]
    candidates = np.flatnonzero(~vocab.is_special[tokens])  # [C], ascending
    budget = min(config.max_predictions_per_seq,
                 max(1, round(len(candidates) * config.mask_prob)))
    if len(candidates) == 0:
        chosen = candidates
    elif config.whole_word_mask:
        chosen = _choose_whole_words(tokens, candidates, budget, rng, vocab)
    else:
        chosen = np.sort(rng.permutation(candidates)[:budget])
    count = len(chosen)

    labels = tokens[chosen]  # [k]
    draw = rng.random(count)  # [k]: one uniform decides [MASK] / random / keep
    random_tokens = vocab.replacement_ids[rng.integers(0, len(vocab.replacement_ids), count)]
    shown = np.where(draw < config.mask_token_ratio, vocab.mask_id,
                     np.where(draw < config.mask_token_ratio + config.random_token_ratio,
                              random_tokens, labels))

    size = config.max_predictions_per_seq
    positions = np.zeros((size,), dtype=np.int32)
    label_out = np.zeros((size,), dtype=np.int32)
    inputs = np.zeros((size,), dtype=np.int32)
    weights = np.zeros((size,), dtype=np.float32)
    positions[:count] = chosen
    label_out[:count] = labels
    inputs[:count] = shown
    weights[:count] = 1.0
    return MaskedPositions(positions, label_out, inputs, weights)


def _choose_whole_words(tokens: np.ndarray, candidates: np.ndarray, budget: int,
                        rng: np.random.Generator, vocab: MaskVocabulary) -> np.ndarray:
    """Whole words in random order until the budget; words that would overflow it are skipped."""
    # A candidate opens a word if its token starts one or the token before it is not a
    # candidate (it follows [CLS]/[SEP]).
    opens = vocab.word_starts[tokens[candidates]] | (np.diff(candidates, prepend=-2) != 1)
    word_of = np.cumsum(opens) - 1  # [C]: word index of each candidate
    word_sizes = np.bincount(word_of)  # [W]
    word_begins = np.flatnonzero(opens)  # [W]: index into candidates
    taken = []
    total = 0
    for word in rng.permutation(len(word_sizes)):
        if total >= budget:
            break
        size = int(word_sizes[word])
        if total + size > budget:
            continue
        taken.append(candidates[word_begins[word]:word_begins[word] + size])
        total += size
    return np.sort(np.concatenate(taken)) if taken else candidates[:0]


def apply_masks(input_ids: np.ndarray, positions: np.ndarray, inputs: np.ndarray,
                weights: np.ndarray) -> np.ndarray:
    """Returns a copy of `input_ids` [..., T] with `inputs` [..., P] written at `positions`.

    Padding entries (weight 0) are left alone, so position 0 ([CLS]) is never overwritten.
    """
    masked = np.array(input_ids, dtype=np.int32)  # [..., T], a fresh contiguous copy
    flat = masked.reshape(-1, masked.shape[-1])  # [N, T], a view into `masked`
    positions = positions.reshape(flat.shape[0], -1)  # [N, P]
    rows, slots = np.nonzero(weights.reshape(positions.shape) > 0)
    flat[rows, positions[rows, slots]] = inputs.reshape(positions.shape)[rows, slots]
    return masked
