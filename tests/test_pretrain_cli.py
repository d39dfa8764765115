"""The pretraining command end to end on the tiny config: metrics, checkpoints, resume."""
import json
import os
import subprocess
import sys

import pytest

from bert.metrics import read_metrics
from bert.tokenizer import load_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC_KEYS = {"step", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy",
               "learning_rate", "tokens_per_sec"}


def _pretrain(workdir, *overrides):
    command = [sys.executable, "-m", "bert.pretrain", "--config", "experiments/pretrain/tiny.py",
               f"--workdir={workdir}",
               "--config.data.train_files=data/sotu/train/19[0-4]*.txt",
               "--config.model.vocab_size=1000", "--config.batch_size=8",
               "--config.log_every=2", "--config.eval_every=1000", "--config.eval_batches=2",
               "--config.checkpoint_every=2", "--config.warmup_steps=2",
               "--config.schedule_steps=100", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    _pretrain(workdir, "--config.train_steps=4")
    return workdir


def test_writes_metrics_checkpoints_and_model_description(first_run):
    records = read_metrics(first_run / "metrics.jsonl")
    train_rows = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    assert all(METRIC_KEYS <= set(r) for r in train_rows)
    assert records[0]["step"] == 0 and "eval_mlm_loss" in records[0]
    # The context-free baseline beside the untrained model, and above what training reaches.
    assert records[0]["eval_unigram_mlm_loss"] < records[0]["eval_mlm_loss"]
    assert 0 < records[0]["eval_unigram_mlm_accuracy"] < 1
    assert sorted(os.listdir(first_run / "checkpoints")) == ["2", "4"]
    assert json.loads((first_run / "bert_config.json").read_text())["num_layers"] == 2
    assert (first_run / "tokenizer").is_dir()
    assert os.listdir(first_run / "tensorboard")


def test_same_command_resumes_instead_of_starting_over(first_run):
    log = _pretrain(first_run, "--config.train_steps=6")
    assert "resumed from step 4" in log
    records = read_metrics(first_run / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6]
    assert [r["step"] for r in records if "eval_mlm_loss" in r and r["step"] == 0] == [0]
    assert "6" in os.listdir(first_run / "checkpoints")


def test_vocab_size_zero_takes_the_given_tokenizers_vocabulary(first_run, tmp_path):
    # A tokenizer of any size (a WordPiece vocab.txt folder, say) with a recipe whose
    # embedding table is sized by it: no vocab_size to match by hand.
    tokenizer = first_run / "tokenizer"
    _pretrain(tmp_path, "--config.train_steps=2", "--config.model.vocab_size=0",
              f"--config.data.tokenizer={tokenizer}")
    described = json.loads((tmp_path / "bert_config.json").read_text())
    assert described["vocab_size"] == load_tokenizer(str(tokenizer)).vocab_size == 1000


def test_unknown_override_key_is_named(tmp_path):
    command = [sys.executable, "-m", "bert.pretrain", "--config", "experiments/pretrain/tiny.py",
               f"--workdir={tmp_path}", "--config.data.mask_probability=0.2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "mask_probability" in done.stderr
    assert not os.listdir(tmp_path)
