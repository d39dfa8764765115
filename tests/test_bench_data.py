"""The benchmark's reference (the original recipe in pure Python) makes real examples, so that
the instances/s it is compared on are instances of the same kind as ours."""

from __future__ import annotations

import numpy as np

from benchmarks.reference_prep import reference_prepare, sentencepiece_processor
from bert.data.corpus import expand_files
from tests.test_data_support import SOTU_EVAL, small_tokenizer


def test_reference_recipe_makes_masked_nsp_examples():
    tokenizer = small_tokenizer()
    arrays = reference_prepare(expand_files(str(SOTU_EVAL / "*.txt"), key="files"),
                               sentencepiece_processor(tokenizer), max_seq_len=64,
                               max_predictions=10, mask_prob=0.15, dupe_factor=1,
                               short_seq_prob=0.1, seed=0)
    ids, weights = arrays["input_ids"], arrays["masked_lm_weights"]
    assert ids.shape[1] == 64 and len(ids) > 300
    assert (ids[:, 0] == tokenizer.cls_id).all()
    assert ((ids == tokenizer.sep_id).sum(1) >= 2).all()  # random replacements may add one
    assert 0.4 < np.mean(arrays["next_sentence_labels"] == 0) < 0.6
    assert abs(weights.sum() / arrays["input_mask"].sum() - 0.15) < 0.02
    rows, slots = np.nonzero(weights)
    shown = ids[rows, arrays["masked_lm_positions"][rows, slots]]
    assert 0.75 < np.mean(shown == tokenizer.mask_id) < 0.85
