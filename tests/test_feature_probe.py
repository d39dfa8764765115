"""The feature-based approach (paper Table 7): cached frozen-encoder word vectors, the layer
strategies, and a BiLSTM tagger trained on them through bert.finetune."""
import json
import os
import random

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from bert import checkpoint, features
from bert.finetune import finetune
from bert.model import BertConfig, BertForPreTraining, BertModel, init_params
from bert.tasks import batches, feature_probe, tagging
from bert.tokenizer import load_tokenizer
from experiments.finetune import ner_features

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CONLL = os.path.join(FIXTURES, "conll", "iob2.txt")
CONFIG = BertConfig(vocab_size=96, hidden_size=32, num_layers=4, num_heads=2,
                    intermediate_size=64, max_position_embeddings=64)


def _model_folder(path: str, shift: float = 0.0) -> dict:
    """A tiny 4-layer model folder with the fixture WordPiece tokenizer; returns its params."""
    tokenizer = load_tokenizer(os.path.join(FIXTURES, "wordpiece"))
    params = jax.device_get(jax.jit(lambda k: init_params(BertForPreTraining(CONFIG), k))(
        jax.random.key(0)))
    params = jax.tree.map(lambda x: x + shift, params)
    checkpoint.write_model_description(path, CONFIG, tokenizer)
    checkpoint.save_params(path, params)
    return params


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    folder, other = str(root / "model"), str(root / "other")
    return folder, _model_folder(folder), other, _model_folder(other, shift=0.01)


def _cached(cache_dir, source, params, path=CONLL, max_seq_len=32, document_context=False):
    tokenizer = load_tokenizer(os.path.join(source, checkpoint.TOKENIZER_DIR))
    return feature_probe.cached_word_features(
        str(cache_dir), source, path, tagging.read_conll(path), tokenizer, CONFIG,
        params["bert"], encoding="utf-8", max_seq_len=max_seq_len,
        document_context=document_context, batch_size=4)


def test_cached_features_are_every_layer_at_each_first_sub_token(models, tmp_path):
    folder, params, _, _ = models
    cached = _cached(tmp_path, folder, params, max_seq_len=64)  # every sentence in one window
    sentences = tagging.read_conll(CONLL)
    tokenizer = load_tokenizer(os.path.join(FIXTURES, "wordpiece"))
    assert cached.words.dtype == ml_dtypes.bfloat16
    assert cached.words.shape == (sum(len(s.words) for s in sentences), 5, 32)
    encode = jax.jit(lambda ids, mask: BertModel(CONFIG).apply(
        {"params": params["bert"]}, ids, jnp.zeros_like(ids), mask,
        output_hidden_states=True).hidden_states)
    for n, sentence in enumerate(sentences):
        pieces = [tokenizer.encode(w) or [tokenizer.unk_id] for w in sentence.words]
        ids = np.zeros((1, 64), np.int32)
        tokens = [tokenizer.cls_id, *(t for p in pieces for t in p), tokenizer.sep_id]
        ids[0, :len(tokens)] = tokens
        firsts = 1 + np.cumsum([0, *map(len, pieces)])[:-1]
        hidden = encode(ids, (ids > 0).astype(np.int32))
        expected = np.stack([np.asarray(h[0, firsts]) for h in hidden], axis=1)  # (words, 5, H)
        got = np.asarray(cached.words[cached.offsets[n]:cached.offsets[n + 1]], np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)


def test_the_cache_is_reused_and_keyed_by_content(models, tmp_path, monkeypatch):
    folder, params, other, other_params = models
    calls = []
    encode = features.encoded_batches
    monkeypatch.setattr(features, "encoded_batches", lambda *a, **k: calls.append(1) or encode(*a, **k))
    first = _cached(tmp_path, folder, params)
    computed = len(calls)
    assert computed > 0
    entries = set(os.listdir(tmp_path))
    copy = tmp_path / "copy.txt"  # the same text under another name is the same features
    copy.write_bytes(open(CONLL, "rb").read())
    again = _cached(tmp_path, folder, params, path=str(copy))
    assert len(calls) == computed and set(os.listdir(tmp_path)) == entries | {"copy.txt"}
    np.testing.assert_array_equal(np.asarray(again.words), np.asarray(first.words))

    _cached(tmp_path, other, other_params)  # another checkpoint
    windowed = _cached(tmp_path, folder, params, max_seq_len=8, document_context=True)
    assert len(calls) > computed
    assert len(set(os.listdir(tmp_path)) - entries - {"copy.txt"}) == 2
    # Windows of 6 words at most: every word of the 29-word sentence still gets its vectors.
    assert (np.abs(np.asarray(windowed.words, np.float32)).sum(axis=(1, 2)) > 0).all()
    assert not [e for e in os.listdir(tmp_path) if ".partial" in e]


@pytest.mark.parametrize("name, first, end, combine", [
    ("embeddings", 0, 1, "one"), ("last_hidden", 4, 5, "one"),
    ("second_to_last_hidden", 3, 4, "one"), ("weighted_sum_last_four", 1, 5, "weighted_sum"),
    ("concat_last_four", 1, 5, "concat"), ("weighted_sum_all", 1, 5, "weighted_sum")])
def test_strategies_read_the_papers_layers(name, first, end, combine):
    assert feature_probe.strategy(name, 4) == feature_probe.Strategy(name, first, end, combine)


def test_strategies_on_twelve_layers_and_bad_names():
    s = feature_probe.strategy("weighted_sum_last_four", 12)
    assert (s.first, s.end) == (9, 13)
    assert feature_probe.strategy("weighted_sum_all", 12).num_layers == 12
    with pytest.raises(ValueError, match="config.feature_strategy='last_five'"):
        feature_probe.strategy("last_five", 12)
    with pytest.raises(ValueError, match="needs at least 4 encoder blocks; the model has 2"):
        feature_probe.strategy("concat_last_four", 2)


def _toy_cache() -> feature_probe.CachedFeatures:
    """3 sentences of 2, 1 and 3 words; word w, layer k, unit h holds 100·w + 10·k + h."""
    w, k, h = np.meshgrid(np.arange(6), np.arange(5), np.arange(3), indexing="ij")
    words = (100 * w + 10 * k + h).astype(ml_dtypes.bfloat16)
    return feature_probe.CachedFeatures(words, np.array([0, 2, 3, 6]))


def test_layer_view_gives_the_selected_layers_of_each_sentences_words():
    view = feature_probe.LayerView(_toy_cache(), first=1, end=5, width=4)
    assert view.shape == (3, 4, 4, 3) and view.ndim == 4
    rows = np.asarray(view[np.array([2, 0])], np.float32)
    assert rows.shape == (2, 4, 4, 3)
    # sentence 2 = words 3, 4, 5; sentence 0 = words 0, 1; then zero padding
    np.testing.assert_array_equal(rows[0, :, 0, 0], [310, 410, 510, 0])
    np.testing.assert_array_equal(rows[1, :, :, 2], [[12, 22, 32, 42], [112, 122, 132, 142],
                                                     [0] * 4, [0] * 4])
    with pytest.raises(ValueError, match="longest sentence's 3 words"):
        feature_probe.LayerView(_toy_cache(), first=0, end=1, width=2)


class _Recording:
    """An array that records every index it is read with."""

    def __init__(self, array):
        self.array, self.reads, self.shape, self.dtype = array, [], array.shape, array.dtype

    def __getitem__(self, index):
        self.reads.append(index)
        return self.array[index]


def test_layer_view_reads_only_the_requested_rows_and_layers():
    toy = _toy_cache()
    recording = _Recording(toy.words)
    view = feature_probe.LayerView(feature_probe.CachedFeatures(recording, toy.offsets), 3, 4, 4)
    view[np.array([1])]
    view[np.array([2])]
    assert recording.reads == [(slice(2, 3), slice(3, 4)), (slice(3, 6), slice(3, 4))]


def test_mixing_layers_by_strategy():
    x = jnp.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]])  # (1 word, 4 layers, 2 units)
    np.testing.assert_allclose(feature_probe.mix_layers(x[:, :1], "one"), [[1.0, 2.0]])
    np.testing.assert_allclose(feature_probe.mix_layers(x, "concat"), [[1, 2, 3, 4, 5, 6, 7, 8]])
    np.testing.assert_allclose(feature_probe.mix_layers(x, "weighted_sum", jnp.zeros(4)),
                               [[4.0, 5.0]])  # equal weights at the start: the mean
    weights = jnp.log(jnp.array([1.0, 0.0, 0.0, 3.0]) + 1e-30)  # softmax -> 1/4, 0, 0, 3/4
    np.testing.assert_allclose(feature_probe.mix_layers(x, "weighted_sum", weights),
                               [[0.25 * 1 + 0.75 * 7, 0.25 * 2 + 0.75 * 8]], rtol=1e-6)


def test_batches_cut_the_word_axis_not_the_vector_axes():
    cache = feature_probe.CachedFeatures(
        np.ones((6, 5, 8), ml_dtypes.bfloat16), np.array([0, 2, 3, 6]))
    rows = feature_probe.word_rows([tagging.Sentence(("a",) * n, ("O",) * n, 0, 1)
                                    for n in (2, 1, 3)], ("O", "B-X"), width=8)
    rows["word_features"] = feature_probe.LayerView(cache, 1, 5, width=8)  # 4 layers, 8 units
    batch = batches.take_rows(rows, np.array([0, 2]), length=4, max_seq_len=8)
    assert batch["input_mask"].shape == (2, 4)
    assert batch["word_features"].shape == (2, 4, 4, 8)
    np.testing.assert_array_equal(batch["input_mask"], [[1, 1, 0, 0], [1, 1, 1, 0]])


# ------------------------------------------------------------------------- through bert.finetune

PEOPLE, PLACES, OTHER = ("peter", "man"), ("japan", "china", "brussels"), (
    "the", "cat", "sat", "on", "mat", "dog", "good", "movie", "won", "cup", "match", "said")


def _synthetic_conll(path, sentences: int, seed: int) -> None:
    """Tags decided by the word alone: people B-PER, places B-LOC, anything else O."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(sentences):
        words = [rng.choice(rng.choice((PEOPLE, PLACES, OTHER, OTHER))) for _ in range(rng.randint(3, 7))]
        tags = ["B-PER" if w in PEOPLE else "B-LOC" if w in PLACES else "O" for w in words]
        blocks.append("".join(f"{w} {t}\n" for w, t in zip(words, tags)))
    path.write_text("\n".join(blocks))


def test_a_bilstm_on_frozen_features_learns_a_separable_tagging_task(models, tmp_path):
    folder, params, _, _ = models
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    _synthetic_conll(train, 48, seed=1)
    _synthetic_conll(dev, 16, seed=2)
    config = ner_features.get_config()
    config.update(dict(init_checkpoint=folder, train_file=str(train), eval_file=str(dev),
                       max_seq_len=16, length_buckets="8", batch_size=8, lstm_size=16,
                       num_train_epochs=20.0, learning_rate=1e-2, log_every=10,
                       feature_strategy="weighted_sum_last_four", document_context=False))
    workdir = str(tmp_path / "run")
    results = finetune(config, workdir)

    assert results["task"] == "ner_features"
    assert results["f1"] > 0.9, results  # chance is far below: 3 tags, entities of 2 types
    with open(os.path.join(workdir, "eval_results.json")) as f:
        assert json.load(f)["f1"] == results["f1"]
    lines = open(os.path.join(workdir, "eval_predictions.conll")).read().split("\n\n")
    assert len([b for b in lines if b.strip()]) == 16
    # The trained state holds the tagger only; the encoder stays frozen outside it.
    trained = checkpoint.load_params(workdir)
    assert set(trained) == {"bilstm_0", "bilstm_1", "classifier", "layer_weights"}
    assert np.abs(trained["layer_weights"]).max() > 0  # moved from the equal start
    assert not os.path.exists(os.path.join(workdir, "task.json"))
    assert len(os.listdir(os.path.join(workdir, "feature_cache"))) == 2  # train and dev


def test_the_tagger_reads_the_strategys_layers():
    for combine, inputs in (("concat", 4 * 32), ("weighted_sum", 32), ("one", 32)):
        model = feature_probe.BiLSTMTagger(5, combine, 4 if combine != "one" else 1, lstm_size=8)
        k = 4 if combine != "one" else 1
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 3, k, 32)),
                                                   jnp.ones((2, 3), jnp.int32)))["params"]
        assert shapes["bilstm_0"]["lstm"]["forward_rnn"]["cell"]["ii"]["kernel"].shape == (inputs, 8)
        assert shapes["bilstm_1"]["lstm"]["backward_rnn"]["cell"]["ii"]["kernel"].shape == (16, 8)
        assert shapes["classifier"]["kernel"].shape == (16, 5)
        assert ("layer_weights" in shapes) == (combine == "weighted_sum")


def test_padding_words_do_not_change_the_real_words_logits():
    model = feature_probe.BiLSTMTagger(3, "one", 1, lstm_size=4)
    x = jax.random.normal(jax.random.key(1), (1, 5, 1, 6))
    mask = jnp.array([[1, 1, 1, 0, 0]])
    params = model.init(jax.random.key(0), x, mask)
    apply = jax.jit(model.apply)
    logits = apply(params, x, mask)
    for padding in (0.0, 9.0):  # the backward LSTM must start at the last real word
        other = apply(params, x.at[:, 3:].set(padding), mask)
        np.testing.assert_allclose(other[:, :3], logits[:, :3], rtol=1e-5, atol=1e-6)
    unmasked = apply(params, x.at[:, 3:].set(9.0), jnp.ones_like(mask))
    assert not np.allclose(unmasked[:, :3], logits[:, :3])  # the test can tell


def test_bad_feature_config_is_named():
    config = ner_features.get_config()
    config.update(dict(init_checkpoint="m", train_file="t", feature_strategy="top"))
    with pytest.raises(ValueError, match="config.feature_strategy: 'top' is not one of"):
        finetune(config, "unused")
    config.feature_strategy, config.random_init = "embeddings", True
    with pytest.raises(ValueError, match="config.random_init"):
        finetune(config, "unused")
