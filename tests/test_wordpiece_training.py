"""The paper's tokenizer: an uncased WordPiece vocabulary trained here, exported by
`bert.convert to-hf`, tokenizes identically in transformers' BertTokenizer; the paper configs
train it by default."""

from __future__ import annotations

import importlib.util

import jax
import pytest
import transformers

from bert import checkpoint, convert
from bert.data import build
from bert.data.corpus import read_documents
from bert.model import BertConfig, BertForPreTraining, init_params
from bert.wordpiece import WordPieceTokenizer, train_wordpiece
from tests.test_data_support import REPO_ROOT, SOTU_EVAL, pretrain_config

TEXTS = [
    "The President of the United States addressed Congress.",
    "UNBELIEVABLY, the café's crème brûlée cost $3.50 — naïve économie!",
    "Tokyo 東京 and Beijing 北京 are capitals; emoji 🙂 are unknown.",
    "Write [MASK] literally, or [mask], and mixed-Case hyphen-ated words...",
    "  leading and trailing whitespace\tand\ttabs  ",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
]


@pytest.fixture(scope="module")
def trained() -> WordPieceTokenizer:
    documents, _ = read_documents(str(SOTU_EVAL / "*.txt"))
    return train_wordpiece((s for d in documents for s in d), 800)


def test_trained_vocabulary_is_uncased_bert_wordpiece(trained):
    assert trained.vocab_size == 800 and trained.vocab[:5] == ["[PAD]", "[UNK]", "[CLS]",
                                                               "[SEP]", "[MASK]"]
    assert trained.do_lower_case and all(t == t.lower() for t in trained.vocab[5:])
    assert any(t.startswith("##") for t in trained.vocab)
    assert trained.encode("THE Congress") == trained.encode("the congress")


def test_exported_folder_tokenizes_identically_in_transformers(trained, tmp_path):
    config = BertConfig(vocab_size=trained.vocab_size, hidden_size=16, num_layers=1, num_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    params = jax.jit(lambda key: init_params(BertForPreTraining(config), key))(jax.random.key(0))
    model_dir = tmp_path / "model"
    checkpoint.write_model_description(str(model_dir), config, trained)
    checkpoint.save_params(str(model_dir), params)
    convert.export_hf(str(model_dir), str(tmp_path / "hf"))
    slow = transformers.BertTokenizer.from_pretrained(str(tmp_path / "hf"))
    fast = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "hf"))
    for text in TEXTS:
        ours = trained.encode(text)
        assert slow.encode(text, add_special_tokens=False) == ours, text
        assert fast.encode(text, add_special_tokens=False) == ours, text
        assert slow.encode(text) == [trained.cls_id, *ours, trained.sep_id]
    assert trained.unk_id in trained.encode(TEXTS[2])  # the test reaches unknown characters
    assert slow.convert_ids_to_tokens(trained.encode(TEXTS[0])) == [
        trained.id_to_token(i) for i in trained.encode(TEXTS[0])]


def test_empty_tokenizer_with_wordpiece_type_trains_and_caches_one(tmp_path):
    config = pretrain_config(tokenizer="", tokenizer_type="wordpiece", eval_files="")
    tokenizer, prepared = build(config, tmp_path)
    assert isinstance(tokenizer, WordPieceTokenizer) and tokenizer.vocab_size == 1000
    folder = next((tmp_path / "data").glob("tokenizer-*"))
    assert (folder / "vocab.txt").is_file()
    again, _ = build(config, tmp_path)
    assert again.fingerprint == tokenizer.fingerprint
    assert prepared.train.input_ids.max() < 1000


@pytest.mark.parametrize("name", ["mini", "small", "medium", "base", "large"])
def test_paper_configs_train_wordpiece_on_the_papers_format(name):
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "experiments" / "pretrain" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    assert (config.data.tokenizer_type, config.model.vocab_size) == ("wordpiece", 30522)
    assert (config.data.corpus_format, config.data.doc_separator) == ("sentences", "blank_line")
