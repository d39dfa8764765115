"""Properties of the whole data path for random documents and configs (hypothesis).

Documents → NSP instances → optional packing → masks, as the input pipeline composes them; the
checks are what the model and the losses rely on, row by row:

* [CLS], [SEP] and padding are never chosen for prediction, and masking leaves them in place;
* masked positions are sorted, unique and inside the row's real tokens, padding slots come last
  with weight 0, and there are at most max_predictions_per_seq of them (and at most the budget
  of mask_prob × maskable tokens);
* segment ids read [CLS] A [SEP] → 0 and B [SEP] → 1 for every instance, packed or not, with 0
  on padding; in packed rows pack ids, restarting positions and [CLS] positions agree with them.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert.data.instances import create_instances
from bert.data.masking import MaskingConfig, MaskVocabulary, apply_masks, mask_batch, row_keys
from bert.data.packing import pack, pack_indices, pack_layout

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = (PAD, UNK, CLS, SEP, MASK)
VOCAB_SIZE = 60

sentence = st.lists(st.integers(5, VOCAB_SIZE - 1), min_size=1, max_size=30)
documents_strategy = st.lists(st.lists(sentence, min_size=1, max_size=8), min_size=2,
                              max_size=6).filter(lambda docs: any(len(d) >= 2 for d in docs))


@st.composite
def masking_configs(draw) -> MaskingConfig:
    mask, rand = draw(st.floats(0, 1)), draw(st.floats(0, 1))
    rand = min(rand, 1 - mask)
    return MaskingConfig(max_predictions_per_seq=draw(st.integers(1, 20)),
                         mask_prob=draw(st.floats(0.01, 0.99)), mask_token_ratio=mask,
                         random_token_ratio=rand, keep_token_ratio=max(0.0, 1 - mask - rand),
                         whole_word_mask=draw(st.booleans()))


def _check_instance(ids: np.ndarray, segments: np.ndarray) -> None:
    """One `[CLS] A [SEP] B [SEP]` span and its segment ids."""
    assert ids[0] == CLS and ids[-1] == SEP and (ids == SEP).sum() == 2 and (ids == CLS).sum() == 1
    first_sep = int(np.flatnonzero(ids == SEP)[0])
    assert 1 < first_sep < len(ids) - 2  # A and B both non-empty
    expected = np.r_[np.zeros(first_sep + 1), np.ones(len(ids) - first_sep - 1)]
    np.testing.assert_array_equal(segments, expected)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=documents_strategy, max_seq_len=st.integers(8, 64),
       short_seq_prob=st.floats(0, 1), seed=st.integers(0, 2**31 - 1),
       masking=masking_configs(), packing=st.integers(0, 4),
       word_starts=st.lists(st.booleans(), min_size=VOCAB_SIZE, max_size=VOCAB_SIZE))
def test_data_path_invariants_hold_for_random_documents_and_configs(
        documents, max_seq_len, short_seq_prob, seed, masking, packing, word_starts):
    instances = create_instances(documents, max_seq_len=max_seq_len, short_seq_prob=short_seq_prob,
                                 dupe_factor=1, seed=seed, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    ids, segments, lengths = instances.input_ids, instances.segment_ids, instances.lengths
    instance_lengths = lengths[:, None]  # [N, 1]: one instance per row
    if packing:  # up to `packing` instances per row
        packed = pack(instances, pack_indices(lengths, max_seq_len=max_seq_len,
                                              max_instances=packing, seed=seed), pad_id=PAD)
        ids, segments, lengths = packed.input_ids, packed.segment_ids, packed.lengths
        instance_lengths = packed.instance_lengths
    vocab = MaskVocabulary(vocab_size=VOCAB_SIZE, mask_id=MASK, special_ids=SPECIAL,
                           word_starts=np.array(word_starts))
    masks = mask_batch(ids, lengths, row_keys(seed, 3, np.arange(len(ids))), masking, vocab)
    shown = apply_masks(ids, masks.positions, masks.inputs, masks.weights)
    layout = pack_layout(instance_lengths, ids.shape[1])

    for row in range(len(ids)):
        length = int(lengths[row])
        real = masks.weights[row] > 0
        count = int(real.sum())
        positions = masks.positions[row][real]
        # Prediction slots: real ones first, sorted, unique, inside the real tokens.
        assert real.tolist() == [True] * count + [False] * (len(real) - count)
        assert (np.diff(positions) > 0).all() and (positions < length).all()
        assert (masks.positions[row][~real] == 0).all()
        # Never a special token; within the cap and the mask_prob budget.
        assert not np.isin(ids[row][positions], SPECIAL).any()
        maskable = int((~np.isin(ids[row][:length], SPECIAL)).sum())
        budget = min(masking.max_predictions_per_seq, max(1, round(maskable * masking.mask_prob)))
        assert count <= (budget if maskable else 0)
        np.testing.assert_array_equal(masks.labels[row][real], ids[row][positions])
        # Masking changes only the chosen positions: specials and padding stay.
        untouched = np.setdiff1d(np.arange(ids.shape[1]), positions)
        np.testing.assert_array_equal(shown[row][untouched], ids[row][untouched])
        # Every instance in the row is a well-formed pair with consistent segment ids.
        assert (ids[row][length:] == PAD).all() and (segments[row][length:] == 0).all()
        start = 0
        for slot, size in enumerate(instance_lengths[row]):
            if size == 0:
                continue
            span = slice(start, start + size)
            _check_instance(ids[row][span], segments[row][span])
            assert (layout["pack_ids"][row][span] == slot + 1).all()
            np.testing.assert_array_equal(layout["position_ids"][row][span], np.arange(size))
            assert layout["nsp_positions"][row][slot] == start
            start += size
        assert start == length
