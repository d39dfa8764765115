"""CoNLL reading (IOB1 and IOB2, documents), first-sub-token windows, conlleval scores, output."""
from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import seqeval.metrics

from bert.tasks import TaskDataError
from bert.tasks import tagging
from bert.wordpiece import WordPieceTokenizer

FIXTURES = Path(__file__).parent / "fixtures"
IOB1 = FIXTURES / "conll" / "iob1.txt"  # CoNLL-2003 columns: token POS chunk tag
IOB2 = FIXTURES / "conll" / "iob2.txt"  # WNUT columns: token<TAB>tag


def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_directory(FIXTURES / "wordpiece")


def tokens(tok: WordPieceTokenizer, ids) -> list[str]:
    return [tok.id_to_token(int(i)) for i in ids]


# ------------------------------------------------------------------------------------ reading


def test_conll_2003_columns_documents_and_lines():
    sentences = tagging.read_conll(IOB1)
    assert [s.document for s in sentences] == [0, 0, 0, 1, 1]
    assert [s.line for s in sentences] == [3, 13, 16, 21, 33]
    assert sentences[0].words == ("EU", "rejects", "German", "call", "to", "boycott", "British",
                                  "lamb", ".")
    assert sentences[0].tags == ("I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "O")
    assert sentences[3].words[4] == "\u00ad"  # a soft hyphen: a word of no tokens
    assert sentences[3].tags[6:8] == ("I-LOC", "B-LOC")  # IOB1's B-: adjacent entities


def test_iob1_and_iob2_files_hold_the_same_entities():
    iob1, iob2 = tagging.read_conll(IOB1), tagging.read_conll(IOB2)
    assert [s.words for s in iob1] == [s.words for s in iob2]
    assert [s.document for s in iob2] == [0, 0, 0, 1, 1]
    assert iob2[0].tags[:3] == ("B-ORG", "O", "B-MISC")
    for a, b in zip(iob1, iob2):
        assert tagging.entity_chunks(a.tags) == tagging.entity_chunks(b.tags)
    assert tagging.entity_chunks(iob1[3].tags) == [("LOC", 2, 3), ("LOC", 6, 7), ("LOC", 7, 8)]
    assert tagging.tag_labels(iob1) == tagging.tag_labels(iob2) == (
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")


@pytest.mark.parametrize("text, message", [
    ("EU B-ORG\nrejects\n", r"bad.txt:2: expected a token and a tag separated by whitespace, "
                            r"got 'rejects'"),
    ("EU NNP PER\n", r"bad.txt:1: tag \(last field\) is 'PER'; expected O, B-TYPE or I-TYPE"),
    ("EU B-ORG\n\nx E-ORG\n", r"bad.txt:3: tag \(last field\) is 'E-ORG'"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(TaskDataError, match=message):
        tagging.read_conll(tmp_path / "bad.txt")


def test_a_tag_outside_the_training_labels_is_named():
    with pytest.raises(TaskDataError, match=r"iob2.txt:3: tag \(last field\) is 'B-ORG', not one "
                                            r"of the labels \['O', 'B-PER', 'I-PER'\]"):
        tagging.read_conll(IOB2, labels=("O", "B-PER", "I-PER"))


# -------------------------------------------------------------------------------- featurizing


def test_only_first_sub_tokens_are_labelled_and_empty_words_become_unk():
    tok = tokenizer()
    sentences = tagging.read_conll(IOB1)
    labels = tagging.tag_labels(sentences)
    features, word_map = tagging.featurize(sentences, tok, 40, labels)
    assert len(word_map.sentence_ids) == 5  # every sentence fits one window
    assert tokens(tok, features["input_ids"][1][:5]) == ["[CLS]", "peter", "black", "##burn",
                                                         "[SEP]"]
    np.testing.assert_array_equal(features["label_weights"][1][:5], [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(features["label_ids"][1][:3], [0] + [labels.index("I-PER")] * 2)
    np.testing.assert_array_equal(word_map.word_ids[1][:5], [-1, 0, 1, -1, -1])
    row = tokens(tok, features["input_ids"][3])
    assert row[:7] == ["[CLS]", "soccer", "-", "japan", "won", "[UNK]", "against"]
    assert features["label_weights"][3][5] == 1.0 and word_map.word_ids[3][5] == 4
    np.testing.assert_array_equal(features["segment_ids"], 0)
    assert features["label_ids"].dtype == np.int32 and features["label_weights"].dtype == np.float32
    np.testing.assert_array_equal(features["input_mask"].sum(1), [11, 5, 8, 13, 33])
    assert features["label_weights"].sum() == sum(len(s.words) for s in sentences)


def test_a_long_sentence_is_windowed_with_every_word_predicted_once():
    tok = tokenizer()
    sentences = tagging.read_conll(IOB2)
    long = sentences[4]  # 29 words, 31 tokens
    labels = tagging.tag_labels(sentences)
    features, word_map = tagging.featurize([long], tok, 12, labels)
    assert len(word_map.sentence_ids) > 3
    predicted = sorted(int(w) for w in word_map.word_ids[word_map.word_ids >= 0])
    assert predicted == list(range(len(long.words)))
    all_pieces = [p for w in long.words for p in (tok.encode(w) or [tok.unk_id])]
    for row in range(len(word_map.sentence_ids)):
        ids = [int(i) for i in features["input_ids"][row] if i]
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and len(ids) == 12
        body = ids[1:-1]  # a contiguous slice of the sentence: context around the chunk
        starts = [i for i in range(len(all_pieces)) if all_pieces[i:i + len(body)] == body]
        assert starts
        for position in np.flatnonzero(word_map.word_ids[row] >= 0):
            word = long.words[word_map.word_ids[row, position]]
            assert features["input_ids"][row, position] == (tok.encode(word) or [tok.unk_id])[0]
            assert labels[features["label_ids"][row, position]] == long.tags[
                word_map.word_ids[row, position]]
    # Predicted chunks take at most half a window (5 tokens), so each has context.
    assert (features["label_weights"].sum(axis=1) <= 5).all()


def test_document_context_fills_the_window_with_neighbouring_sentences():
    tok = tokenizer()
    sentences = tagging.read_conll(IOB1)
    features, word_map = tagging.featurize(sentences, tok, 12, tagging.tag_labels(sentences),
                                           document_context=True)
    peter = list(word_map.sentence_ids).index(1)
    # 3 tokens of the sentence; 7 of context, 3 before and 4 after, within document 0.
    assert tokens(tok, features["input_ids"][peter]) == [
        "[CLS]", "british", "lamb", ".", "peter", "black", "##burn", "brussels", "[UNK]", "-",
        "[UNK]", "[SEP]"]
    np.testing.assert_array_equal(features["label_weights"][peter],
                                  [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    soccer = list(word_map.sentence_ids).index(3)
    assert tokens(tok, features["input_ids"][soccer])[1] == "soccer"  # nothing from document 0


@pytest.mark.parametrize("max_seq_len", [8, 12, 64])
@pytest.mark.parametrize("document_context", [False, True])
@pytest.mark.parametrize("path", [IOB1, IOB2])
def test_gold_label_ids_map_back_to_the_gold_tags(path, document_context, max_seq_len):
    sentences = tagging.read_conll(path)
    labels = tagging.tag_labels(sentences)
    features, word_map = tagging.featurize(sentences, tokenizer(), max_seq_len, labels,
                                           document_context=document_context)
    assert features["input_ids"].shape[1] == max_seq_len
    assert (features["input_mask"].sum(1) <= max_seq_len).all()
    last_used = int(np.flatnonzero((word_map.word_ids >= 0).any(axis=0)).max())
    predicted = tagging.word_predictions(features["label_ids"][:, : last_used + 1], word_map,
                                         sentences, labels)
    assert predicted == [list(s.tags) for s in sentences]


def test_predictions_that_miss_a_word_are_an_error():
    sentences = tagging.read_conll(IOB1)
    labels = tagging.tag_labels(sentences)
    features, word_map = tagging.featurize(sentences, tokenizer(), 32, labels)
    with pytest.raises(ValueError, match="predictions cover 4 tokens per window"):
        tagging.word_predictions(features["label_ids"][:, :4], word_map, sentences, labels)


# ------------------------------------------------------------------------------------ metrics

TYPES = ("PER", "LOC", "ORG")


def _spell(chunks: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Tags of `chunks` in IOB1 (B- only after an entity of the same type) or IOB2."""
    tags = ["O"] * length
    for entity_type, start, end in chunks:
        tags[start:end] = [f"I-{entity_type}"] * (end - start)
        after_same = start > 0 and tags[start - 1] != "O" and tags[start - 1][2:] == entity_type
        if scheme == "iob2" or after_same:
            tags[start] = f"B-{entity_type}"
    return tags


def _random_tags(rng: np.random.Generator, length: int) -> list[str]:
    choices = ["O", "O", "O"] + [f"{p}-{t}" for t in TYPES for p in "BI"]
    return [choices[i] for i in rng.integers(0, len(choices), length)]


@pytest.mark.parametrize("seed", range(8))
def test_entity_scores_match_seqeval_and_iob1_scores_as_iob2(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, 12)
    gold = [_random_tags(rng, n) for n in lengths]
    predicted = [[t if rng.random() < 0.7 else _random_tags(rng, 1)[0] for t in s] for s in gold]
    scores = tagging.entity_scores(gold, predicted)
    assert scores == pytest.approx(dict(
        precision=seqeval.metrics.precision_score(gold, predicted),
        recall=seqeval.metrics.recall_score(gold, predicted),
        f1=seqeval.metrics.f1_score(gold, predicted)))
    for scheme in ("iob1", "iob2"):
        respelled = [[_spell(tagging.entity_chunks(s), len(s), scheme) for s in tags]
                     for tags in (gold, predicted)]
        assert tagging.entity_scores(*respelled) == pytest.approx(scores)
        assert seqeval.metrics.f1_score(*respelled) == pytest.approx(scores["f1"])


def test_conlleval_chunk_boundaries():
    # I- after O, or after another type, opens an entity; B- after I- of the same type too.
    tags = ["I-PER", "I-PER", "I-LOC", "O", "I-LOC", "B-LOC", "I-LOC", "B-PER", "B-PER"]
    assert tagging.entity_chunks(tags) == [("PER", 0, 2), ("LOC", 2, 3), ("LOC", 4, 5),
                                           ("LOC", 5, 7), ("PER", 7, 8), ("PER", 8, 9)]
    assert tagging.entity_chunks(["O", "O"]) == []


@pytest.mark.filterwarnings("ignore:.*ill-defined:UserWarning")
@pytest.mark.parametrize("gold, predicted, expected", [
    ([["B-PER", "O"]], [["O", "O"]], dict(precision=0.0, recall=0.0, f1=0.0)),
    ([["O", "O"]], [["B-PER", "O"]], dict(precision=0.0, recall=0.0, f1=0.0)),
    ([["O"]], [["O"]], dict(precision=0.0, recall=0.0, f1=0.0)),
    # A boundary off by one is wrong; the entity in the second sentence is right.
    ([["B-PER", "I-PER", "O"], ["B-LOC"]], [["B-PER", "O", "O"], ["I-LOC"]],
     dict(precision=0.5, recall=0.5, f1=0.5)),
])
def test_entity_score_edge_cases(gold, predicted, expected):
    assert tagging.entity_scores(gold, predicted) == pytest.approx(expected)
    assert seqeval.metrics.f1_score(gold, predicted) == pytest.approx(expected["f1"])


# ------------------------------------------------------------------------------ loss and output


def test_loss_sums_cover_labelled_first_sub_tokens_of_real_rows():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5, 4)).astype(np.float32)
    label_ids = rng.integers(0, 4, (3, 5)).astype(np.int32)
    label_weights = np.array([[0, 1, 1, 0, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0]], np.float32)
    example_weights = np.array([1, 1, 0], np.float32)
    sums = tagging.loss_sums(jnp.asarray(logits), {
        "label_ids": jnp.asarray(label_ids), "label_weights": jnp.asarray(label_weights),
        "example_weights": jnp.asarray(example_weights)})
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, label_ids[..., None], -1)[..., 0]
    weights = label_weights * example_weights[:, None]
    assert float(sums["count"]) == 4.0
    assert float(sums["loss_sum"]) == pytest.approx(float((nll * weights).sum()), rel=1e-5)
    assert float(sums["correct"]) == float(((logits.argmax(-1) == label_ids) * weights).sum())


def test_conll_output_is_token_gold_predicted(tmp_path):
    sentences = tagging.read_conll(IOB2)[1:3]
    predicted = [["B-PER", "O"], ["B-LOC", "B-LOC"]]
    tagging.write_conll(tmp_path / "out.txt", sentences, predicted)
    assert (tmp_path / "out.txt").read_text() == (
        "Peter B-PER B-PER\nBlackburn I-PER O\n\nBRUSSELS B-LOC B-LOC\n1996-08-22 O B-LOC\n\n")
