"""BERT-tiny (L=2, H=128, A=2) on the shipped State of the Union slice: a CPU-sized run for
tests and quick checks of the whole pipeline (about a minute on 2 cores).

    python -m bert.pretrain --config experiments/pretrain/tiny.py --workdir runs/tiny
"""
from ml_collections import ConfigDict

from bert.config import pretraining_config


def get_config() -> ConfigDict:
    c = pretraining_config()
    c.seed = 0
    c.train_steps = 200
    c.batch_size = 16  # global
    c.max_seq_len = 64
    c.max_predictions_per_seq = 10
    c.learning_rate = 1e-3  # small models tolerate (and need) a larger peak
    c.warmup_steps = 20
    c.log_every = 20
    c.eval_every = 100
    c.eval_batches = 8
    c.checkpoint_every = 100
    c.keep_checkpoints = 2

    c.model.preset = "tiny"
    c.model.vocab_size = 4000

    c.data.train_files = "data/sotu/train/*.txt"
    c.data.eval_files = "data/sotu/eval/*.txt"
    c.data.dupe_factor = 1
    return c
