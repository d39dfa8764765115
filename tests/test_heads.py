"""Fine-tuning models start from pretraining: encoder restored, task heads new, MLM/NSP dropped;
from a fine-tuned folder, its head too when it is the same task with the same labels."""
import dataclasses

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from bert import checkpoint
from bert.heads import (BertForMultipleChoice, BertForQuestionAnswering,
                        BertForSequenceClassification, BertForTokenClassification, TaskHead,
                        init_finetune_params, load_task_model, save_task_head)
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


def test_multiple_choice_scores_each_choice_as_its_own_row(pretrained):
    """(B, C, T) → (B, C), each score the head on that choice's pooled [CLS] alone."""
    folder, saved, _, _ = pretrained
    model = BertForMultipleChoice(CONFIG)
    params, report = init_finetune_params(folder, model, jax.random.key(0))
    assert report.initialised == ("classifier/bias", "classifier/kernel")
    assert params["classifier"]["kernel"].shape == (32, 1)
    batch = hf_reference.random_batch(CONFIG.vocab_size, batch_size=6, seq_len=10)
    choices = {k: batch[k].reshape(2, 3, 10) for k in ("input_ids", "segment_ids", "input_mask")}
    scores = jax.jit(model.apply)({"params": params}, *choices.values())
    assert scores.shape == (2, 3)
    rows = (batch["input_ids"], batch["segment_ids"], batch["input_mask"])  # (6, 10) each
    pooled = jax.jit(BertModel(CONFIG).apply)({"params": saved["bert"]}, *rows).pooled_output
    expected = pooled @ params["classifier"]["kernel"] + params["classifier"]["bias"]  # (6, 1)
    np.testing.assert_allclose(scores, expected.reshape(2, 3), atol=1e-5)


@pytest.mark.parametrize("model, features, dropped", [
    (BertForSequenceClassification(CONFIG, num_labels=3), "pooled_output", True),
    (BertForSequenceClassification(CONFIG, num_labels=1), "pooled_output", True),
    (BertForTokenClassification(CONFIG, num_labels=3), "sequence_output", True),
    (BertForQuestionAnswering(CONFIG), "sequence_output", False),
    (BertForMultipleChoice(CONFIG), "pooled_output", True),
])
def test_dropout_and_features_are_where_transformers_puts_them(model, features, dropped):
    """The head reads the encoder output transformers' head reads, through dropout or not."""
    calls = {}

    def record(call, args, kwargs, context):
        out = call(*args, **kwargs)
        if context.method_name == "__call__" and len(context.module.path) == 1:  # the model's own
            calls[context.module.path[0]] = (args, out)
        return out

    params = jax.jit(lambda key: init_params(model, key))(jax.random.key(0))
    inputs = (np.full((2, 6), 7, np.int32), np.zeros((2, 6), np.int32), np.ones((2, 6), np.int32))
    with nn.intercept_methods(record):
        model.apply({"params": params}, *inputs, deterministic=False, rngs={"dropout": jax.random.key(1)})
    head_input = calls.pop("span" if isinstance(model, BertForQuestionAnswering) else "classifier")[0][0]
    encoded = getattr(calls.pop("bert")[1], features)
    if dropped:
        (dropout_input,), dropout_output = calls.pop("Dropout_0")
        assert dropout_input is encoded and not np.allclose(dropout_output, encoded)
        np.testing.assert_array_equal(head_input, dropout_output)
    else:
        np.testing.assert_array_equal(head_input, encoded)
    assert calls == {}


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, pretrained):
    """A model folder holding a fine-tuned sentiment classifier and its task.json."""
    folder, _, _, _ = pretrained
    head = TaskHead("sequence_classification", ("negative", "positive"))
    params, _ = init_finetune_params(folder, head.model(CONFIG), jax.random.key(3))
    tuned = str(tmp_path_factory.mktemp("tuned") / "model")
    checkpoint.write_model_description(tuned, CONFIG, WordPieceTokenizer(hf_reference.vocab(cased=False)))
    save_task_head(tuned, head)
    checkpoint.save_params(tuned, jax.device_get(params))
    return tuned, _leaves(params)


def test_fine_tuned_folder_restores_its_head_for_the_same_task_and_labels(fine_tuned):
    tuned, saved = fine_tuned
    model = BertForSequenceClassification(CONFIG, num_labels=2)
    for labels in (None, ("negative", "positive")):
        params, report = init_finetune_params(tuned, model, jax.random.key(9), labels=labels)
        assert report.initialised == () and report.dropped == ()
        assert _leaves(params)["classifier/kernel"].tobytes() == saved["classifier/kernel"].tobytes()
    head, loaded, params = load_task_model(tuned)
    assert head.labels == ("negative", "positive") and loaded == model
    assert _leaves(params)["classifier/kernel"].tobytes() == saved["classifier/kernel"].tobytes()


@pytest.mark.parametrize("model, labels", [
    (BertForSequenceClassification(CONFIG, num_labels=2), ("positive", "negative")),  # reordered
    (BertForTokenClassification(CONFIG, num_labels=2), None),  # same shape, other task
    (BertForSequenceClassification(CONFIG, num_labels=3), None),  # e.g. MNLI after SST-2
])
def test_fine_tuned_head_for_other_labels_or_task_starts_afresh(fine_tuned, model, labels):
    tuned, saved = fine_tuned
    params, report = init_finetune_params(tuned, model, jax.random.key(9), labels=labels)
    assert report.initialised == report.dropped == ("classifier/bias", "classifier/kernel")
    leaves = _leaves(params)
    assert not np.array_equal(leaves["classifier/kernel"][:, :2], saved["classifier/kernel"])
    assert leaves["bert/pooler/kernel"].tobytes() == saved["bert/pooler/kernel"].tobytes()
