"""Fine-tuning models start from pretraining: encoder restored, task heads new, MLM/NSP dropped."""
import dataclasses

import jax
import numpy as np
import optax
import pytest

from bert import checkpoint
from bert.heads import (BertForQuestionAnswering, BertForSequenceClassification,
                        BertForTokenClassification, init_finetune_params)
from bert.model import BertConfig, BertForPreTraining, BertModel, init_params
from bert.train import TrainState
from bert.wordpiece import WordPieceTokenizer
from tests import hf_reference

CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=64, max_position_embeddings=32)


def _leaves(tree) -> dict[str, np.ndarray]:
    return {"/".join(str(k.key) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A model folder and a work directory holding different pretraining params."""
    root = tmp_path_factory.mktemp("heads")
    tokenizer = WordPieceTokenizer(hf_reference.vocab(cased=False))
    params = jax.device_get(jax.jit(lambda k: init_params(BertForPreTraining(CONFIG), k))(
        jax.random.key(0)))
    folder = str(root / "model")
    checkpoint.write_model_description(folder, CONFIG, tokenizer)
    checkpoint.save_params(folder, params)

    workdir = str(root / "workdir")
    checkpoint.write_model_description(workdir, CONFIG, tokenizer)
    trained = jax.tree.map(lambda x: x + 0.25, params)
    manager = checkpoint.CheckpointManager(workdir, keep=1, async_save=False)
    state = TrainState(step=np.int32(5), params=trained,
                       opt_state=jax.jit(optax.adamw(1e-3).init)(trained))
    manager.save(5, state, {"step": 5}, force=True)
    manager.close()
    return folder, params, workdir, trained


def test_classifier_restores_encoder_and_pooler_and_reports_everything(pretrained):
    folder, saved, _, _ = pretrained
    model = BertForSequenceClassification(CONFIG, num_labels=3)
    params, report = init_finetune_params(folder, model, jax.random.key(1))

    saved_leaves, leaves = _leaves(saved), _leaves(params)
    encoder = sorted(n for n in saved_leaves if n.startswith("bert/"))
    assert list(report.restored) == encoder and "bert/pooler/kernel" in encoder
    for name in encoder:
        assert leaves[name].tobytes() == saved_leaves[name].tobytes(), name
    assert report.initialised == ("classifier/bias", "classifier/kernel")
    assert leaves["classifier/kernel"].shape == (32, 3) and np.abs(leaves["classifier/kernel"]).max() > 0
    assert set(report.dropped) == {n for n in saved_leaves if n.startswith(("mlm/", "nsp/"))}
    assert "classifier/kernel" in report.summary()
    assert sorted(leaves) == sorted(_leaves(jax.eval_shape(lambda: init_params(model, jax.random.key(2)))))

    batch = hf_reference.random_batch(CONFIG.vocab_size, seq_len=10)
    inputs = (batch["input_ids"], batch["segment_ids"], batch["input_mask"])
    logits = jax.jit(model.apply)({"params": params}, *inputs)
    assert logits.shape == (3, 3)
    # Its features are the pretrained encoder's own: the pooled vector feeds the new head.
    pooled = jax.jit(BertModel(CONFIG).apply)({"params": saved["bert"]}, *inputs).pooled_output
    np.testing.assert_allclose(
        logits, pooled @ leaves["classifier/kernel"] + leaves["classifier/bias"], atol=1e-5)


def test_work_directory_gives_its_latest_checkpoint(pretrained):
    _, _, workdir, trained = pretrained
    params, report = init_finetune_params(
        workdir, BertForTokenClassification(CONFIG, num_labels=5), jax.random.key(0))
    leaves, trained_leaves = _leaves(params), _leaves(trained)
    for name in report.restored:
        assert leaves[name].tobytes() == trained_leaves[name].tobytes(), name
    assert report.initialised == ("classifier/bias", "classifier/kernel")
    logits = jax.jit(BertForTokenClassification(CONFIG, num_labels=5).apply)(
        {"params": params}, *(np.ones((2, 7), np.int32),) * 3)
    assert logits.shape == (2, 7, 5)


def test_span_head_gives_start_and_end_logits(pretrained):
    folder, _, _, _ = pretrained
    model = BertForQuestionAnswering(CONFIG)
    params, report = init_finetune_params(folder, model, jax.random.key(0))
    assert report.initialised == ("span/bias", "span/kernel")
    start, end = jax.jit(model.apply)({"params": params}, *(np.ones((2, 9), np.int32),) * 3)
    assert start.shape == end.shape == (2, 9) and not np.allclose(start, end)


def test_heads_differ_by_rng_and_dropout_may_change(pretrained):
    folder, _, _, _ = pretrained
    tuned = dataclasses.replace(CONFIG, dropout_rate=0.3, attention_dropout_rate=0.0)
    model = BertForSequenceClassification(tuned, num_labels=2)
    a, _ = init_finetune_params(folder, model, jax.random.key(0))
    b, _ = init_finetune_params(folder, model, jax.random.key(1))
    assert not np.array_equal(a["classifier"]["kernel"], b["classifier"]["kernel"])
    np.testing.assert_array_equal(a["bert"]["pooler"]["kernel"], b["bert"]["pooler"]["kernel"])


def test_a_differently_sized_model_is_refused_with_the_field(pretrained):
    folder, _, _, _ = pretrained
    wider = dataclasses.replace(CONFIG, intermediate_size=128)
    with pytest.raises(ValueError, match=r"bert_config.json does not match .*intermediate_size: "
                                         r"checkpoint 64, model 128"):
        init_finetune_params(folder, BertForSequenceClassification(wider, 2), jax.random.key(0))
