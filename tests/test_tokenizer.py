"""The tokenizer interface: reserved ids, round trips, word starts, save/load, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bert.data.corpus import read_sentences
from bert.tokenizer import (SPECIAL_TOKENS, SentencePieceTokenizer, Tokenizer, TokenizerError,
                            WordPieceTokenizer, load_tokenizer, special_ids, train_sentencepiece)
from tests.test_data_support import SMALL_VOCAB, SOTU_EVAL, small_tokenizer


def test_trained_sentencepiece_reserves_the_five_special_ids():
    tok = small_tokenizer()
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == SMALL_VOCAB
    assert special_ids(tok) == (0, 1, 2, 3, 4)
    assert [tok.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)


@pytest.mark.parametrize("text", [
    "The state of the Union is strong.",
    "We spent $3.5 billion in 1947 — and 12% more since.",
    "Zebras and quokkas: “unseen” words, even Ωμέγα, survive byte fallback.",
])
def test_encode_decode_round_trips_ordinary_text(text):
    tok = small_tokenizer()
    ids = tok.encode(text)
    assert ids and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.unk_id not in ids  # byte fallback: no character is unknown
    assert tok.decode(ids) == text
    assert tok.encode_batch([text, text]) == [ids, ids]


def test_literal_special_token_text_is_not_a_special_token():
    # Control symbols: a document containing "[MASK]" or "[SEP]" cannot forge structure.
    tok = small_tokenizer()
    ids = tok.encode("Press [MASK] then [SEP] and [CLS].")
    assert not set(ids) & set(special_ids(tok))
    assert tok.decode(ids) == "Press [MASK] then [SEP] and [CLS]."


def test_word_start_mask_marks_word_initial_pieces_and_specials():
    tok = small_tokenizer()
    starts = tok.word_start_mask()
    assert starts.shape == (tok.vocab_size,) and starts.dtype == bool
    assert starts[list(special_ids(tok))].all()
    for i in range(5, tok.vocab_size):
        assert starts[i] == tok.id_to_token(i).startswith("\u2581")
    ids = tok.encode("Congress unanimously appropriated")
    # Exactly three words, so exactly three word-initial pieces.
    assert int(starts[ids].sum()) == 3 and starts[ids[0]]


def test_training_is_deterministic(tmp_path):
    files = [str(SOTU_EVAL / name)
             for name in ("1926_calvin_coolidge_r.txt", "1985_ronald_reagan_r.txt")]
    first = train_sentencepiece(read_sentences(files), 600, str(tmp_path / "a" / "sp"))
    second = train_sentencepiece(read_sentences(files), 600, str(tmp_path / "b" / "sp"))
    assert first.fingerprint == second.fingerprint
    assert (tmp_path / "a" / "sp.model").read_bytes() == (tmp_path / "b" / "sp.model").read_bytes()


def test_vocab_size_the_corpus_cannot_fill_is_a_clear_error(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("One short sentence here. And another one there.\n")
    with pytest.raises(TokenizerError, match="vocab_size=5000"):
        train_sentencepiece(read_sentences(str(text)), 5000, str(tmp_path / "sp"))


def test_save_and_load_from_a_folder_and_from_the_model_file(tmp_path):
    tok = small_tokenizer()
    tok.save(tmp_path / "model_dir")
    for source in (tmp_path / "model_dir", tmp_path / "model_dir" / "sentencepiece.model"):
        loaded = load_tokenizer(source)
        assert isinstance(loaded, SentencePieceTokenizer)
        assert loaded.fingerprint == tok.fingerprint
        assert loaded.encode("Fellow citizens") == tok.encode("Fellow citizens")
        np.testing.assert_array_equal(loaded.word_start_mask(), tok.word_start_mask())


def test_missing_tokenizer_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(TokenizerError, match=str(missing)):
        load_tokenizer(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="sentencepiece.model.*vocab.txt"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(TokenizerError, match="spm.model"):
        SentencePieceTokenizer.from_file(tmp_path / "spm.model")


def _write_vocab(directory: Path, tokens: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")


WORDPIECE_VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "state",
                   "of", "union", "is", "strong", "un", "##believ", "##able", "."]


def test_load_tokenizer_dispatches_vocab_txt_to_wordpiece_behind_the_same_interface(tmp_path):
    # WordPiece itself is tested in test_wordpiece.py; here: the dispatch and the protocol.
    _write_vocab(tmp_path / "wp", WORDPIECE_VOCAB)
    for source in (tmp_path / "wp", tmp_path / "wp" / "vocab.txt"):
        tok = load_tokenizer(source)
        assert isinstance(tok, WordPieceTokenizer) and isinstance(tok, Tokenizer)
        assert special_ids(tok) == (0, 2, 3, 4, 5)
        ids = tok.encode("The state of the union is unbelievable.")
        assert [tok.id_to_token(i) for i in ids][-4:] == ["un", "##believ", "##able", "."]
        assert tok.word_start_mask()[ids].tolist() == [True] * 6 + [True, False, False, True]
    _write_vocab(tmp_path / "nomask", [t for t in WORDPIECE_VOCAB if t != "[MASK]"])
    with pytest.raises(TokenizerError, match=r"\[MASK\]"):
        load_tokenizer(tmp_path / "nomask")
