"""encode_with_offsets: the ids of encode, and each token's characters in the original text."""
from __future__ import annotations

import pytest

from bert.wordpiece import WordPieceTokenizer
from tests.test_data_support import small_tokenizer

TEXTS = [
    "The state of the Union is strong.",
    "  Ωμέγα café (1895–1943)  two\tspaces\nand a new line ",
    "ﬁve ① Ｆｕｌｌ width, [MASK] and ü.",
]


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_spans_cover_every_visible_character_once(text):
    tok = small_tokenizer()
    ids, spans = tok.encode_with_offsets(text)
    assert ids == tok.encode(text) and len(spans) == len(ids)
    covered = [position for start, end in spans for position in range(start, end)]
    # In order, without overlap, skipping exactly the whitespace (byte-fallback pieces before a
    # character's last byte, and the "▁" of a word that starts with one, have empty spans).
    assert covered == [i for i, char in enumerate(text) if not char.isspace()]


def test_sentencepiece_spans_of_whole_word_pieces_are_the_words():
    tok = small_tokenizer()
    text = "The state of the Union"
    ids, spans = tok.encode_with_offsets(text)
    pieces = [tok.id_to_token(i) for i in ids]
    assert pieces == ["▁The", "▁state", "▁of", "▁the", "▁Union"]
    assert spans == [(0, 3), (4, 9), (10, 12), (13, 16), (17, 22)]
    ids, spans = tok.encode_with_offsets("a — b")  # "—" is three byte pieces
    assert [text for text in ("a — b"[s:e] for s, e in spans) if text] == ["a", "—", "b"]


def test_wordpiece_spans_point_into_the_text_before_normalization():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe", "(", ")", "-", "1895",
             "new", "##york", "##er", "北", "京"]
    tok = WordPieceTokenizer(vocab, do_lower_case=True)
    text = "  Café (1895-ü) [MASK] NewYorker 北京"
    ids, spans = tok.encode_with_offsets(text)
    assert ids == tok.encode(text)
    assert [tok.id_to_token(i) for i in ids] == [
        "cafe", "(", "1895", "-", "[UNK]", ")", "[MASK]", "new", "##york", "##er", "北", "京"]
    assert [text[s:e] for s, e in spans] == [
        "Café", "(", "1895", "-", "ü", ")", "[MASK]", "New", "York", "er", "北", "京"]
