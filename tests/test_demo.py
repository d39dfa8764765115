"""The demo's fine-tuning comparison: one run from the pretrained model, one from fresh weights."""
import json
import os

import jax
import numpy as np

from bert import checkpoint
from bert.demo import compare_starts, comparison_table
from bert.model import BertConfig, BertForPreTraining, init_params
from bert.wordpiece import WordPieceTokenizer
from tests import hf_reference

CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=64, max_position_embeddings=32)
TASK_CONFIG = '''
from bert.config import finetuning_config


def get_config():
    c = finetuning_config()
    c.task = "sst2"
    c.train_file = "{train}"
    c.eval_file = "{dev}"
    c.max_seq_len = 16
    c.length_buckets = "16"
    c.batch_size = 8  # one row per fake device
    c.num_train_epochs = 1.0
    c.learning_rate = 1e-4
    c.dropout_rate = 0.0
    return c
'''


def test_compare_starts_runs_pretrained_and_random_side_by_side(tmp_path):
    model_dir = str(tmp_path / "pretrained")
    params = jax.device_get(jax.jit(lambda k: init_params(BertForPreTraining(CONFIG), k))(
        jax.random.key(0)))
    params = jax.tree.map(lambda x: x + 0.5, params)  # far from any fresh init
    checkpoint.write_model_description(
        model_dir, CONFIG, WordPieceTokenizer(hf_reference.vocab(cased=False)))
    checkpoint.save_params(model_dir, params)
    rows = "".join(f"{text}\t{label}\n" for text, label in [
        ("a good film .", 1), ("a bad film .", 0), ("good , good .", 1), ("bad , bad .", 0)] * 4)
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    config_path = tmp_path / "demo_tiny.py"
    config_path.write_text(TASK_CONFIG.format(train=tmp_path / "train.tsv",
                                              dev=tmp_path / "dev.tsv"))

    row = compare_starts(str(config_path), model_dir)

    assert (row.name, row.task, row.metric, row.train_steps) == ("tiny", "sst2", "accuracy", 2)
    runs = {start: os.path.join(model_dir, "finetune", "tiny", start)
            for start in ("pretrained", "random")}
    for start, run in runs.items():
        with open(os.path.join(run, "eval_results.json")) as f:
            assert json.load(f)["accuracy"] == getattr(row, start)
        with open(os.path.join(run, "experiment_config.json")) as f:
            assert json.load(f)["random_init"] == (start == "random")
    # Two steps at 1e-4 barely move the weights: the pretrained run still holds the shifted
    # embeddings, the random one a fresh N(0, 0.02) table.
    embeddings = {start: np.asarray(
        checkpoint.load_params(run)["bert"]["embeddings"]["word_embeddings"]["embedding"])
        for start, run in runs.items()}
    saved = np.asarray(params["bert"]["embeddings"]["word_embeddings"]["embedding"])
    np.testing.assert_allclose(embeddings["pretrained"], saved, atol=1e-2)
    assert np.abs(embeddings["random"].mean()) < 0.01

    table = comparison_table([row])
    assert "tiny (sst2)" in table and f"{row.pretrained:.3f}" in table
