"""The left-to-right objective (Table 5's "LTR & No NSP"): causal attention, next-token loss,
and the BiLSTM put on top of an encoder for fine-tuning."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert import train
from bert.config import model_config, validate
from bert.model import BertConfig, BertForPreTraining, BertModel, init_params
from tests.fakes import random_batch, tiny_config

CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=64, max_position_embeddings=32, dropout_rate=0.0,
                    attention_dropout_rate=0.0)


def _encode(config, input_ids, input_mask):
    model = BertModel(config)
    params = init_params(model, jax.random.key(0))
    return model.apply({"params": params}, input_ids, jnp.zeros_like(input_ids), input_mask)


@pytest.mark.parametrize("causal", [True, False])
def test_a_causal_token_never_sees_later_tokens(causal):
    config = dataclasses.replace(CONFIG, causal=causal)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (2, 12)).astype(np.int32)
    changed = ids.copy()
    changed[:, 7:] = rng.integers(5, 100, (2, 5))  # every token from position 7 on differs
    mask = np.ones_like(ids)
    before = _encode(config, ids, mask).sequence_output
    after = _encode(config, changed, mask).sequence_output
    early_same = np.allclose(before[:, :7], after[:, :7], atol=1e-6)
    assert early_same == causal  # bidirectional attention lets later tokens through
    assert not np.allclose(before[:, 7:], after[:, 7:], atol=1e-3)


def test_causal_pooler_reads_the_last_real_token():
    config = dataclasses.replace(CONFIG, causal=True)
    ids = np.random.default_rng(1).integers(5, 100, (2, 10)).astype(np.int32)
    mask = np.array([[1] * 10, [1] * 6 + [0] * 4], np.int32)
    full = _encode(config, ids, mask)
    changed = ids.copy()
    changed[1, 7:] = 3  # padding of row 1: no output of it may change
    other = _encode(config, changed, mask)
    np.testing.assert_allclose(full.pooled_output[1], other.pooled_output[1], atol=1e-6)
    # Row 0 has no padding: its last token sees its first one, [CLS] would not.
    changed = ids.copy()
    changed[0, 0] = 4
    assert not np.allclose(full.pooled_output[0], _encode(config, changed, mask).pooled_output[0],
                           atol=1e-4)


def test_ltr_loss_is_the_next_token_loss_of_each_prefix():
    """Each prefix run alone through the model predicts the token after it; the LTR loss of
    the masked batch is the mean of those negative log-likelihoods over real targets."""
    config = dataclasses.replace(CONFIG, causal=True)
    model = BertForPreTraining(config)
    params = init_params(model, jax.random.key(3))
    batch = random_batch(batch_size=2, seq_len=8, num_predictions=2)
    original = batch["input_ids"].copy()
    masked = dict(batch)
    masked["input_ids"] = original.copy()
    for row in range(2):
        for slot in range(2):
            if batch["masked_lm_weights"][row, slot]:
                position = batch["masked_lm_positions"][row, slot]
                batch["masked_lm_ids"][row, slot] = original[row, position]
                masked["input_ids"][row, position] = 4  # as [MASK]
    task = train.LeftToRightTask(model)
    loss, sums = train.make_loss_fn(task)(params, masked, None,
                                          task.denominators(masked))

    nll = []
    for row in range(2):
        length = int(batch["input_mask"][row].sum())
        for t in range(length - 1):
            prefix = original[row:row + 1, :t + 1]
            logits, _ = model.apply({"params": params}, prefix,
                                    batch["segment_ids"][row:row + 1, :t + 1],
                                    np.ones_like(prefix), np.array([[t]], np.int32))
            log_probs = jax.nn.log_softmax(np.asarray(logits[0, 0], np.float64))
            nll.append(-float(log_probs[original[row, t + 1]]))
    assert float(sums["ltr_count"]) == len(nll)
    np.testing.assert_allclose(float(loss), np.mean(nll), rtol=1e-5)
    metrics = task.finalize(jax.device_get(sums))
    np.testing.assert_allclose(metrics["ltr_loss"], np.mean(nll), rtol=1e-5)


def test_ltr_config_makes_a_causal_model_without_nsp():
    config = tiny_config(objective="ltr", **{"data.nsp_weight": 0.0})
    validate(config)
    assert model_config(config).causal
    assert not model_config(tiny_config()).causal
    with pytest.raises(ValueError, match="data.nsp_weight"):
        validate(tiny_config(objective="ltr"))
    with pytest.raises(ValueError, match="config.objective"):
        validate(tiny_config(objective="rtl"))
    with pytest.raises(ValueError, match="causal"):
        train.LeftToRightTask(BertForPreTraining(CONFIG))


def test_top_bilstm_reads_every_token_and_keeps_the_width():
    config = dataclasses.replace(CONFIG, causal=True, top_bilstm=True)
    model = BertModel(config)
    params = init_params(model, jax.random.key(0))
    assert "bilstm" in params
    ids = np.random.default_rng(2).integers(5, 100, (2, 8)).astype(np.int32)
    mask = np.ones_like(ids)
    out = model.apply({"params": params}, ids, np.zeros_like(ids), mask)
    assert out.sequence_output.shape == (2, 8, 32)
    changed = ids.copy()
    changed[:, -1] = 3
    other = model.apply({"params": params}, changed, np.zeros_like(ids), mask)
    # The backward LSTM carries the last token to the first: no longer left-to-right.
    assert not np.allclose(out.sequence_output[:, 0], other.sequence_output[:, 0], atol=1e-6)


def test_a_checkpoint_along_a_run_becomes_a_model_folder_for_the_bilstm_arm(tmp_path):
    """convert at-step exports step 5 of a run that went on to step 7; fine-tuning it with
    top_bilstm restores the causal encoder and initialises only the BiLSTM and the head."""
    import optax

    from bert import checkpoint, convert
    from bert.heads import BertForSequenceClassification, init_finetune_params
    from bert.wordpiece import WordPieceTokenizer
    from tests import hf_reference

    config = dataclasses.replace(CONFIG, causal=True)
    workdir = str(tmp_path / "run")
    checkpoint.write_model_description(workdir, config,
                                       WordPieceTokenizer(hf_reference.vocab(cased=False)))
    params = jax.device_get(init_params(BertForPreTraining(config), jax.random.key(0)))
    manager = checkpoint.CheckpointManager(workdir, keep=None, async_save=False)
    for step in (5, 7):
        moved = jax.tree.map(lambda x: x + step, params)
        state = train.TrainState(step=np.int32(step), params=moved,
                                 opt_state=optax.sgd(1e-3).init(moved))
        manager.save(step, state, {"step": step}, force=True)
    manager.close()

    np.testing.assert_array_equal(
        checkpoint.load_params(workdir, step=5)["nsp"]["bias"], params["nsp"]["bias"] + 5)
    with pytest.raises(checkpoint.CheckpointError, match="no step 6"):
        checkpoint.load_params(workdir, step=6)
    folder = str(tmp_path / "model")
    convert.model_at_step(workdir, 5, folder)
    assert checkpoint.read_model_config(folder).causal
    exported = checkpoint.load_params(folder)
    np.testing.assert_array_equal(exported["bert"]["pooler"]["kernel"],
                                  params["bert"]["pooler"]["kernel"] + 5)

    model = BertForSequenceClassification(dataclasses.replace(config, top_bilstm=True), 2)
    tuned, report = init_finetune_params(folder, model, jax.random.key(1))
    assert {n.split("/")[1] for n in report.initialised if n.startswith("bert/")} == {"bilstm"}
    assert "classifier/kernel" in report.initialised
    np.testing.assert_array_equal(tuned["bert"]["pooler"]["kernel"],
                                  params["bert"]["pooler"]["kernel"] + 5)
