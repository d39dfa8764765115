"""MLM masking: the paper's statistics, its invariants under random inputs, whole words."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert.data.corpus import DataError
from bert.data.masking import (MaskingConfig, MaskVocabulary, apply_masks, choose_masks,
                               mask_batch, row_keys)
from tests.test_data_support import small_tokenizer

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB_SIZE = 1000


def synthetic_vocab(word_starts: np.ndarray | None = None) -> MaskVocabulary:
    if word_starts is None:
        word_starts = np.ones((VOCAB_SIZE,), dtype=bool)
    return MaskVocabulary(vocab_size=VOCAB_SIZE, mask_id=MASK,
                          special_ids=(PAD, UNK, CLS, SEP, MASK), word_starts=word_starts)


def synthetic_rows(rng: np.random.Generator, rows: int, seq_len: int):
    """[CLS] A [SEP] B [SEP] rows of random ordinary tokens, random lengths, padded."""
    ids = np.zeros((rows, seq_len), dtype=np.int32)
    lengths = rng.integers(seq_len // 2, seq_len + 1, size=rows)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(5, VOCAB_SIZE, size=length)
        split = rng.integers(2, length - 2)
        ids[row, [0, split, length - 1]] = [CLS, SEP, SEP]
    return ids, lengths


def mask_rows(ids, lengths, config, vocab, seed=0):
    """Per-row results of masking the whole batch at once."""
    masks = mask_batch(ids, lengths, row_keys(seed, 0, np.arange(len(ids))), config, vocab)
    return [type(masks)(masks.positions[r], masks.labels[r], masks.inputs[r], masks.weights[r])
            for r in range(len(ids))]


def test_paper_statistics_over_100k_tokens():
    rng = np.random.default_rng(0)
    ids, lengths = synthetic_rows(rng, rows=1200, seq_len=128)
    config = MaskingConfig(max_predictions_per_seq=20)
    results = mask_rows(ids, lengths, config, synthetic_vocab())
    candidates = int(sum(length - 3 for length in lengths))
    assert candidates >= 100_000
    chosen = np.concatenate([m.weights for m in results]).sum()
    labels = np.concatenate([m.labels[m.weights > 0] for m in results])
    shown = np.concatenate([m.inputs[m.weights > 0] for m in results])
    assert abs(chosen / candidates - 0.15) < 0.005
    as_mask = np.mean(shown == MASK)
    as_self = np.mean(shown == labels)
    as_random = 1.0 - as_mask - as_self
    assert abs(as_mask - 0.8) < 0.015
    assert abs(as_random - 0.1) < 0.015
    assert abs(as_self - 0.1) < 0.015
    assert not np.isin(shown[shown != MASK], [PAD, UNK, CLS, SEP]).any()


@pytest.mark.parametrize("ratios,expect", [
    ((1.0, 0.0, 0.0), "mask"), ((0.0, 1.0, 0.0), "random"), ((0.0, 0.0, 1.0), "keep")])
def test_replacement_ratios_are_configurable(ratios, expect):
    rng = np.random.default_rng(1)
    ids, lengths = synthetic_rows(rng, rows=200, seq_len=64)
    config = MaskingConfig(max_predictions_per_seq=10, mask_token_ratio=ratios[0],
                           random_token_ratio=ratios[1], keep_token_ratio=ratios[2])
    results = mask_rows(ids, lengths, config, synthetic_vocab())
    labels = np.concatenate([m.labels[m.weights > 0] for m in results])
    shown = np.concatenate([m.inputs[m.weights > 0] for m in results])
    if expect == "mask":
        assert (shown == MASK).all()
    elif expect == "random":
        assert not (shown < 5).any()  # never a special token, never [MASK]
        assert np.mean(shown != labels) > 0.98  # a fresh token, barring 1-in-995 collisions
    else:
        np.testing.assert_array_equal(shown, labels)


def test_cap_and_specials_on_a_concrete_row():
    ids = np.array([CLS, 10, 11, 12, SEP, 13, 14, SEP, PAD, PAD], dtype=np.int32)
    config = MaskingConfig(max_predictions_per_seq=3, mask_prob=0.9)
    masks = choose_masks(ids, 8, 0, config, synthetic_vocab())
    assert masks.weights.tolist() == [1.0, 1.0, 1.0]  # 0.9 * 5 candidates capped at 3
    assert set(masks.positions.tolist()) <= {1, 2, 3, 5, 6}
    masked = apply_masks(ids, masks.positions, masks.inputs, masks.weights)
    assert masked[[0, 4, 7, 8, 9]].tolist() == [CLS, SEP, SEP, PAD, PAD]
    assert ids[1] == 10  # apply_masks copies


def test_row_without_candidates_gets_no_predictions():
    ids = np.array([CLS, SEP, SEP, PAD], dtype=np.int32)
    masks = choose_masks(ids, 3, 0, MaskingConfig(5), synthetic_vocab())
    assert masks.weights.sum() == 0 and masks.positions.tolist() == [0] * 5


def test_whole_word_masking_masks_complete_words_of_a_real_tokenizer():
    tok = small_tokenizer()
    vocab = MaskVocabulary.from_tokenizer(tok)
    text_a = "The unbelievably extraordinary Congressional appropriations were reconsidered."
    text_b = "Notwithstanding all misunderstandings, representatives deliberated."
    ids = np.array([tok.cls_id, *tok.encode(text_a), tok.sep_id, *tok.encode(text_b), tok.sep_id])
    starts = tok.word_start_mask()
    assert (~starts[ids]).sum() > 10  # plenty of multi-piece words to cut in half
    config = MaskingConfig(max_predictions_per_seq=12, mask_prob=0.3, whole_word_mask=True)
    for seed in range(100):
        masks = choose_masks(ids, len(ids), seed, config, vocab)
        chosen = set(masks.positions[masks.weights > 0].tolist())
        assert chosen
        for word in words_of(ids, starts, vocab.is_special):
            assert set(word) <= chosen or not set(word) & chosen, (seed, word)


def words_of(ids, starts, is_special):
    """Position lists of the words of a row: a start token plus following continuations."""
    words = []
    for position, token in enumerate(ids):
        if is_special[token]:
            continue
        if starts[token] or not words or words[-1][-1] != position - 1:
            words.append([position])
        else:
            words[-1].append(position)
    return words


def test_a_rows_masks_depend_on_its_key_only():
    rng = np.random.default_rng(2)
    ids, lengths = synthetic_rows(rng, rows=64, seq_len=32)
    config = MaskingConfig(max_predictions_per_seq=6)
    keys = row_keys(7, 3, np.arange(100, 164))
    whole = mask_batch(ids, lengths, keys, config, synthetic_vocab())
    for row in (0, 17, 63):  # alone, the same row gets the same masks as inside the batch
        alone = choose_masks(ids[row], lengths[row], keys[row], config, synthetic_vocab())
        np.testing.assert_array_equal(alone.positions, whole.positions[row])
        np.testing.assert_array_equal(alone.inputs, whole.inputs[row])
    reversed_batch = mask_batch(ids[::-1], lengths[::-1], keys[::-1], config, synthetic_vocab())
    np.testing.assert_array_equal(reversed_batch.positions[::-1], whole.positions)
    other_keys = mask_batch(ids, lengths, row_keys(8, 3, np.arange(100, 164)), config,
                            synthetic_vocab())
    assert np.mean(np.all(other_keys.positions == whole.positions, axis=1)) < 0.1
    assert len(set(row_keys(0, 1, np.arange(10_000)).tolist())) == 10_000


def test_invalid_settings_name_their_config_key():
    with pytest.raises(DataError, match="config.data.mask_token_ratio: .* must sum to 1"):
        MaskingConfig(10, mask_token_ratio=0.8, random_token_ratio=0.1, keep_token_ratio=0.2)
    with pytest.raises(DataError, match="config.data.mask_prob: must be in"):
        MaskingConfig(10, mask_prob=0.0)
    with pytest.raises(DataError, match="config.data.random_token_ratio: must be in"):
        MaskingConfig(10, mask_token_ratio=0.8, random_token_ratio=-0.2, keep_token_ratio=0.4)
    with pytest.raises(DataError, match="config.max_predictions_per_seq"):
        MaskingConfig(0)


@st.composite
def masking_cases(draw):
    seq_len = draw(st.integers(3, 48))
    length = draw(st.integers(0, seq_len))
    real = draw(st.lists(st.integers(0, 40), min_size=length, max_size=length))
    ids = np.array(real + [PAD] * (seq_len - length), dtype=np.int32)
    weights = draw(st.lists(st.floats(0, 1), min_size=3, max_size=3).filter(lambda w: sum(w) > 0))
    ratios = [w / sum(weights) for w in weights]
    ratios[2] = 1.0 - ratios[0] - ratios[1]
    config = MaskingConfig(
        max_predictions_per_seq=draw(st.integers(1, 20)),
        mask_prob=draw(st.floats(0.01, 0.99)),
        mask_token_ratio=ratios[0], random_token_ratio=ratios[1],
        keep_token_ratio=max(ratios[2], 0.0),
        whole_word_mask=draw(st.booleans()))
    starts = np.array(draw(st.lists(st.booleans(), min_size=41, max_size=41)), dtype=bool)
    vocab = MaskVocabulary(vocab_size=41, mask_id=MASK, special_ids=(PAD, UNK, CLS, SEP, MASK),
                           word_starts=starts)
    return ids, length, config, vocab, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=300, deadline=None)
@given(masking_cases())
def test_masking_invariants_hold_for_random_rows_and_configs(case):
    ids, length, config, vocab, seed = case
    masks = choose_masks(ids, length, seed, config, vocab)
    count = int(masks.weights.sum())
    real = masks.weights > 0
    positions = masks.positions[real]
    candidates = [p for p in range(length) if not vocab.is_special[ids[p]]]
    budget = min(config.max_predictions_per_seq,
                 max(1, round(len(candidates) * config.mask_prob))) if candidates else 0
    # Shapes, dtypes, padding layout.
    assert masks.positions.shape == masks.labels.shape == masks.weights.shape == (
        config.max_predictions_per_seq,)
    assert masks.positions.dtype == np.int32 and masks.weights.dtype == np.float32
    assert real.tolist() == [True] * count + [False] * (config.max_predictions_per_seq - count)
    # Sorted, unique, within the real tokens, never special, within budget.
    assert (np.diff(positions) > 0).all()
    assert set(positions.tolist()) <= set(candidates)
    assert count <= budget
    if not config.whole_word_mask:
        assert count == budget
    np.testing.assert_array_equal(masks.labels[real], ids[positions])
    # Shown tokens: [MASK], the original, or an ordinary token.
    shown = masks.inputs[real]
    assert ((shown == MASK) | (shown == masks.labels[real]) | ~vocab.is_special[shown]).all()
    masked = apply_masks(ids, masks.positions, masks.inputs, masks.weights)
    untouched = np.setdiff1d(np.arange(len(ids)), positions)
    np.testing.assert_array_equal(masked[untouched], ids[untouched])
    if config.whole_word_mask:
        chosen = set(positions.tolist())
        for word in words_of(ids[:length], vocab.word_starts, vocab.is_special):
            assert set(word) <= chosen or not set(word) & chosen
