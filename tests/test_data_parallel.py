"""Fast, parallel preparation: the same examples from any number of worker processes, and the
shortcuts (flat token arrays, counted truncation) equal the plain per-token computation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bert.data import build
from bert.data.corpus import read_documents
from bert.data.instances import create_instances, truncation_counts
from bert.data.parallel import balanced_chunks
from bert.data.tokenized import TokenizedCorpus, tokenize_files
from tests.test_data_support import SOTU_EVAL, pretrain_config, small_tokenizer


@settings(max_examples=300, deadline=None)
@given(length_a=st.integers(1, 300), length_b=st.integers(1, 300), max_tokens=st.integers(2, 300))
def test_counted_truncation_equals_trimming_one_token_at_a_time(length_a, length_b, max_tokens):
    a, b, trimmed_a, trimmed_b = length_a, length_b, 0, 0
    while a + b > max_tokens:  # the original recipe's loop, without the coin flips
        if a > b:
            a, trimmed_a = a - 1, trimmed_a + 1
        else:
            b, trimmed_b = b - 1, trimmed_b + 1
    assert truncation_counts(length_a, length_b, max_tokens) == (trimmed_a, trimmed_b)


@given(sizes=st.lists(st.integers(0, 50), max_size=40), chunks=st.integers(1, 12))
def test_balanced_chunks_cover_every_index_once_in_order(sizes, chunks):
    ranges = balanced_chunks(sizes, chunks)
    assert [i for r in ranges for i in r] == list(range(len(sizes)))
    assert len(ranges) <= chunks and all(len(r) for r in ranges)


def test_split_long_sentences_cuts_and_drops_like_the_list_version():
    documents = [[[5] * 10, [], [6] * 3], [[]], [[7] * 25, [8] * 4]]
    corpus = TokenizedCorpus.from_documents(documents).split_long_sentences(8)
    assert corpus.documents() == [[[5] * 8, [5] * 2, [6] * 3],
                                  [[7] * 8, [7] * 8, [7] * 8, [7], [8] * 4]]


def test_tokenizing_in_workers_equals_reading_then_encoding_each_sentence():
    tokenizer = small_tokenizer()
    pattern = str(SOTU_EVAL / "*.txt")
    documents, summary = read_documents(pattern)
    expected = [[tokenizer.encode(sentence) for sentence in document] for document in documents]
    for workers in (1, 3):
        corpus, parallel_summary = tokenize_files(pattern, tokenizer=tokenizer,
                                                  doc_separator="file", key="files",
                                                  num_workers=workers)
        assert corpus.documents() == expected
        assert parallel_summary == summary


def test_instances_are_identical_for_any_number_of_workers():
    tokenizer = small_tokenizer()
    corpus, _ = tokenize_files(str(SOTU_EVAL / "*.txt"), tokenizer=tokenizer,
                               doc_separator="file", key="files")
    results = [create_instances(corpus, max_seq_len=48, short_seq_prob=0.3, dupe_factor=2,
                                seed=7, cls_id=2, sep_id=3, pad_id=0, num_workers=workers)
               for workers in (1, 2, 5)]
    for other in results[1:]:
        for name in ("input_ids", "segment_ids", "lengths", "next_sentence_labels"):
            np.testing.assert_array_equal(getattr(other, name), getattr(results[0], name))


def test_prepared_examples_do_not_depend_on_prep_workers(tmp_path):
    prepared = [build(pretrain_config(prep_workers=workers, masking="static", packing=True),
                      tmp_path / str(workers))[1] for workers in (1, 3)]
    assert prepared[0].directory.name == prepared[1].directory.name  # same cache key
    for name in ("input_ids", "segment_ids", "lengths", "next_sentence_labels",
                 "masked_lm_positions", "masked_lm_inputs", "instance_lengths"):
        np.testing.assert_array_equal(getattr(prepared[0].train, name),
                                      getattr(prepared[1].train, name), err_msg=name)
    np.testing.assert_array_equal(prepared[0].eval.input_ids, prepared[1].eval.input_ids)
