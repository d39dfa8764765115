"""WordPiece ids agree with transformers' BertTokenizerFast on the same vocab.txt and settings."""
import json

import numpy as np
import pytest
import transformers

from bert.tokenizer import TokenizerError, load_tokenizer
from bert.wordpiece import WordPieceTokenizer
from tests import hf_reference

PARAGRAPH = (
    "The quick brown fox, naïve and über-quick, ran to the café in Paris! "
    "北京大学 is big; 日本人 like tea (and coffee)... Unplayable? The zebra's "
    "xylophone was résumé-worthy: unable, quickly, RAN.  New\tYork\n\"old man\" [MASK]."
)

SETTINGS = {
    "uncased": (False, {"do_lower_case": True}),
    "cased": (True, {"do_lower_case": False}),
    "lowercase_keep_accents": (True, {"do_lower_case": True, "strip_accents": False}),
    "cased_strip_accents": (True, {"do_lower_case": False, "strip_accents": True}),
    "no_cjk_splitting": (True, {"do_lower_case": False, "tokenize_chinese_chars": False}),
}


def _folder(tmp_path, cased: bool, settings: dict):
    hf_reference.write_vocab(str(tmp_path), cased=cased)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    return tmp_path


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_ids_equal_bert_tokenizer_fast(tmp_path, name):
    cased, settings = SETTINGS[name]
    folder = _folder(tmp_path, cased, settings)
    ours = WordPieceTokenizer.from_directory(folder)
    theirs = transformers.BertTokenizerFast.from_pretrained(str(folder))
    ids = ours.encode(PARAGRAPH)
    assert ids == theirs.encode(PARAGRAPH, add_special_tokens=False)
    assert ours.encode_batch([PARAGRAPH, "café"]) == [ids, ours.encode("café")]


@pytest.mark.parametrize("cased", [False, True])
def test_paragraph_exercises_unknowns_pieces_cjk_and_casing(tmp_path, cased):
    """Guards the equality test above: the paragraph must hit every tricky path."""
    ours = WordPieceTokenizer.from_directory(_folder(tmp_path, cased, {"do_lower_case": not cased}))
    tokens = [ours.id_to_token(i) for i in ours.encode(PARAGRAPH)]
    assert "[UNK]" in tokens and "##able" in tokens and "[MASK]" in tokens
    assert {"北", "京", "大", "学", "日", "本", "人"} <= set(tokens)
    assert {",", "!", ";", "(", ")", "?", ":", "'", '"', "-"} <= set(tokens)
    if cased:
        assert {"The", "Paris", "café", "über", "naïve", "New"} <= set(tokens)
    else:
        assert {"the", "paris", "cafe", "uber", "naive", "new"} <= set(tokens)
        assert not any(t != t.lower() for t in tokens if t not in ("[UNK]", "[MASK]"))


def test_special_ids_word_starts_and_decode(tmp_path):
    tok = WordPieceTokenizer.from_directory(_folder(tmp_path, False, {"do_lower_case": True}))
    vocab = hf_reference.vocab(cased=False)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == len(vocab)
    starts = tok.word_start_mask()
    assert starts.shape == (len(vocab),)
    np.testing.assert_array_equal(starts, [not t.startswith("##") for t in vocab])
    assert not starts[vocab.index("##able")] and starts[vocab.index("un")]
    assert tok.decode(tok.encode("Unable, quickly!")) == "unable, quickly!"


def test_saved_folder_round_trips_and_transformers_reads_it(tmp_path):
    cased, settings = SETTINGS["lowercase_keep_accents"]
    tok = WordPieceTokenizer.from_directory(_folder(tmp_path / "src", cased, settings))
    tok.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text()) == {
        "do_lower_case": True, "strip_accents": False}
    again = load_tokenizer(tmp_path / "saved")
    assert isinstance(again, WordPieceTokenizer)
    assert again.encode(PARAGRAPH) == tok.encode(PARAGRAPH)
    assert again.fingerprint == tok.fingerprint
    theirs = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "saved"))
    assert theirs.encode(PARAGRAPH, add_special_tokens=False) == tok.encode(PARAGRAPH)


def test_settings_change_the_fingerprint(tmp_path):
    cased = WordPieceTokenizer(hf_reference.vocab(cased=True), do_lower_case=False)
    lowered = WordPieceTokenizer(hf_reference.vocab(cased=True), do_lower_case=True)
    assert cased.fingerprint != lowered.fingerprint


def test_casing_is_inferred_when_the_folder_does_not_say(tmp_path):
    hf_reference.write_vocab(str(tmp_path / "cased"), cased=True)
    (tmp_path / "cased" / "tokenizer_config.json").unlink()
    assert WordPieceTokenizer.from_directory(tmp_path / "cased").encode("Paris") == [
        hf_reference.vocab(cased=True).index("Paris")]
    hf_reference.write_vocab(str(tmp_path / "uncased"), cased=False)
    (tmp_path / "uncased" / "tokenizer_config.json").write_text("{}")
    assert WordPieceTokenizer.from_directory(tmp_path / "uncased").encode("Paris") == [
        hf_reference.vocab(cased=False).index("paris")]


def test_custom_special_token_names_come_from_the_config(tmp_path):
    vocab = ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>", "hello", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "pad_token": "<pad>", "unk_token": {"content": "<unk>"}, "cls_token": "<cls>",
        "sep_token": "<sep>", "mask_token": "<mask>"}))
    tok = WordPieceTokenizer.from_directory(tmp_path)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.encode("hellos world") == [5, 6, 1]


def test_bad_folders_are_named(tmp_path):
    (tmp_path / "nomask").mkdir()
    (tmp_path / "nomask" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(TokenizerError, match=r"nomask/vocab.txt.*\[MASK\]"):
        load_tokenizer(tmp_path / "nomask")
    hf_reference.write_vocab(str(tmp_path / "badjson"), cased=False)
    (tmp_path / "badjson" / "tokenizer_config.json").write_text("{do_lower_case: true")
    with pytest.raises(TokenizerError, match=r"badjson/tokenizer_config.json:1: invalid JSON"):
        load_tokenizer(tmp_path / "badjson")
    (tmp_path / "badjson" / "tokenizer_config.json").write_text('{"do_lower_case": "yes"}')
    with pytest.raises(ValueError, match="do_lower_case must be true or false"):
        WordPieceTokenizer.from_directory(tmp_path / "badjson")
