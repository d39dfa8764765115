"""NSP instances: real continuations, 50/50 labels, exact layout, determinism.

Documents here are made of consecutive integers: document d is the run [base_d, base_d + n_d),
cut into sentences. So a token says which document it came from and where, and "B is the real
continuation of A" becomes arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert.data.corpus import DataError
from bert.data.instances import IS_NEXT, NOT_NEXT, Instances, create_instances

PAD, CLS, SEP = 0, 2, 3
FIRST_TOKEN = 5


def counting_documents(rng: np.random.Generator, docs: int, sentences: tuple[int, int],
                       sentence_len: tuple[int, int]):
    """Documents of consecutive integers; also returns (doc_of_token, sentence_starts)."""
    documents, doc_of, starts = [], {}, set()
    next_token = FIRST_TOKEN
    for d in range(docs):
        document = []
        for _ in range(rng.integers(*sentences)):
            length = int(rng.integers(*sentence_len))
            starts.add(next_token)
            document.append(list(range(next_token, next_token + length)))
            for t in document[-1]:
                doc_of[t] = d
            next_token += length
        documents.append(document)
    return documents, doc_of, starts


def split_row(instances: Instances, row: int) -> tuple[list[int], list[int]]:
    """(A, B) of a row, checking the [CLS] A [SEP] B [SEP] layout and segment ids on the way."""
    length = int(instances.lengths[row])
    ids = instances.input_ids[row].tolist()
    segments = instances.segment_ids[row].tolist()
    assert ids[0] == CLS and ids[length - 1] == SEP
    assert ids.count(SEP) == 2 and ids.count(CLS) == 1
    first_sep = ids.index(SEP)
    assert all(t == PAD for t in ids[length:])
    assert segments == [0] * (first_sep + 1) + [1] * (length - first_sep - 1) + [0] * (
        len(ids) - length)
    tokens_a, tokens_b = ids[1:first_sep], ids[first_sep + 1:length - 1]
    assert tokens_a and tokens_b
    return tokens_a, tokens_b


def is_run(tokens: list[int]) -> bool:
    return all(b == a + 1 for a, b in zip(tokens, tokens[1:]))


def build(documents, **overrides) -> Instances:
    kwargs = dict(max_seq_len=48, short_seq_prob=0.1, dupe_factor=1, seed=0, cls_id=CLS,
                  sep_id=SEP, pad_id=PAD)
    kwargs.update(overrides)
    return create_instances(documents, **kwargs)


def test_is_next_pairs_continue_their_document_and_not_next_pairs_do_not():
    documents, doc_of, sentence_starts = counting_documents(
        np.random.default_rng(0), docs=60, sentences=(10, 40), sentence_len=(3, 12))
    instances = build(documents, dupe_factor=3)
    max_num_tokens = 48 - 3
    exact_continuations = 0
    for row in range(len(instances)):
        tokens_a, tokens_b = split_row(instances, row)
        assert is_run(tokens_a) and is_run(tokens_b)  # truncation only trims the ends
        same_document = doc_of[tokens_b[0]] == doc_of[tokens_a[0]]
        if instances.next_sentence_labels[row] == IS_NEXT:
            assert same_document and tokens_b[0] > tokens_a[-1]
            if tokens_b[0] == tokens_a[-1] + 1:
                exact_continuations += 1
                assert tokens_b[0] in sentence_starts  # A is whole sentences
            else:  # the gap can only come from truncation, which fills the budget exactly
                assert len(tokens_a) + len(tokens_b) == max_num_tokens
        else:
            assert instances.next_sentence_labels[row] == NOT_NEXT and not same_document
    assert exact_continuations > 0.5 * np.sum(instances.next_sentence_labels == IS_NEXT)


def test_is_next_fraction_is_half_and_text_is_reused_after_random_next():
    documents, _, _ = counting_documents(np.random.default_rng(1), docs=300,
                                         sentences=(5, 30), sentence_len=(3, 20))
    instances = build(documents, max_seq_len=64, dupe_factor=3)
    assert len(instances) > 3500
    assert abs(np.mean(instances.next_sentence_labels == IS_NEXT) - 0.5) < 0.03
    # The sentences left over by a random-next pair are put back, so (up to truncation)
    # every token appears in some A or real-continuation B.
    once = build(documents, max_seq_len=64, short_seq_prob=0.0)
    seen = set()
    for row in range(len(once)):
        tokens_a, tokens_b = split_row(once, row)
        seen.update(tokens_a)
        if once.next_sentence_labels[row] == IS_NEXT:
            seen.update(tokens_b)
    total = sum(len(s) for d in documents for s in d)
    assert len(seen) / total > 0.85  # without putting back, about a quarter would be lost


def test_short_sequences_appear_at_short_seq_prob():
    documents, _, _ = counting_documents(np.random.default_rng(2), docs=200,
                                         sentences=(60, 80), sentence_len=(3, 8))
    full = build(documents, max_seq_len=128, short_seq_prob=0.0)
    some_short = build(documents, max_seq_len=128, short_seq_prob=0.5)
    # Without short targets only document tails and short random-next spans fall short.
    assert np.mean(full.lengths < 64) < 0.15
    assert np.mean(some_short.lengths < 64) > np.mean(full.lengths < 64) + 0.3


def test_an_enormous_sentence_becomes_several_instances():
    documents = [[list(range(100, 400))], [list(range(500, 520)), list(range(600, 610))]]
    instances = build(documents, max_seq_len=32, short_seq_prob=0.0)
    assert instances.lengths.max() <= 32
    from_long = instances.input_ids[:, 1] >= 100  # A starts inside the long sentence
    from_long &= instances.input_ids[:, 1] < 400
    assert from_long.sum() >= 5  # 300 tokens in pieces of 29, two pieces per instance
    seen = set(instances.input_ids[(instances.input_ids >= 100) & (instances.input_ids < 400)])
    assert len(seen) > 150


def test_same_seed_same_instances_other_seed_other_instances():
    documents, _, _ = counting_documents(np.random.default_rng(3), docs=20,
                                         sentences=(5, 15), sentence_len=(2, 10))
    first, again, other = build(documents), build(documents), build(documents, seed=1)
    for name in ("input_ids", "segment_ids", "lengths", "next_sentence_labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.next_sentence_labels, other.next_sentence_labels)
    assert first.input_ids.dtype == np.int32 and first.segment_ids.dtype == np.int8
    assert first.lengths.dtype == np.int32 and first.next_sentence_labels.dtype == np.int32


def test_bad_settings_are_named():
    documents = [[[5, 6], [7, 8]], [[9, 10], [11]]]
    with pytest.raises(DataError, match="config.max_seq_len"):
        build(documents, max_seq_len=4)
    with pytest.raises(DataError, match="config.data.dupe_factor"):
        build(documents, dupe_factor=0)
    with pytest.raises(DataError, match="config.data.short_seq_prob"):
        build(documents, short_seq_prob=1.5)
    with pytest.raises(DataError, match="at least two non-empty documents"):
        build([[[5, 6], [7, 8]], [[], []]])
    with pytest.raises(DataError, match="documents of two or more sentences"):
        build([[[5, 6, 7]], [[8, 9]]])


document_strategy = st.lists(
    st.lists(st.integers(1, 70), min_size=1, max_size=12),  # sentence lengths of one document
    min_size=2, max_size=8).filter(lambda shapes: any(len(s) >= 2 for s in shapes))


@settings(max_examples=150, deadline=None)
@given(doc_shapes=document_strategy, max_seq_len=st.integers(5, 64),
       short_seq_prob=st.floats(0, 1), dupe_factor=st.integers(1, 2),
       seed=st.integers(0, 2**32 - 1))
def test_instance_invariants_hold_for_random_documents(doc_shapes, max_seq_len, short_seq_prob,
                                                       dupe_factor, seed):
    documents, next_token = [], FIRST_TOKEN
    doc_of = {}
    for d, shape in enumerate(doc_shapes):
        document = []
        for length in shape:
            document.append(list(range(next_token, next_token + length)))
            doc_of.update({t: d for t in document[-1]})
            next_token += length
        documents.append(document)
    instances = build(documents, max_seq_len=max_seq_len, short_seq_prob=short_seq_prob,
                      dupe_factor=dupe_factor, seed=seed)
    multi_sentence = sum(len(shape) >= 2 for shape in doc_shapes)
    assert len(instances) >= multi_sentence * dupe_factor  # each such document yields a pair
    assert instances.input_ids.shape == (len(instances), max_seq_len)
    assert (instances.lengths <= max_seq_len).all() and (instances.lengths >= 5).all()
    for row in range(len(instances)):
        tokens_a, tokens_b = split_row(instances, row)
        assert is_run(tokens_a) and is_run(tokens_b)
        same_document = doc_of[tokens_a[0]] == doc_of[tokens_b[0]]
        assert same_document == (instances.next_sentence_labels[row] == IS_NEXT)
