"""The paper's recipe at the demo's size: a 2-layer, 128-wide BERT pretrained with MLM + NSP on
the shipped State of the Union slice (3.7 MB, 105 addresses; 5 held-out addresses for
evaluation), on the CPU. `make demo` runs experiments/pretrain/fast.py, this config with the
starts, masking rate and schedule length that leave the unigram plateau; this one stays on it.

    python -m bert.demo --workdir runs/demo_paper --config experiments/pretrain/demo.py
    python -m bert.pretrain --config experiments/pretrain/demo.py --workdir runs/demo_paper

About 4 minutes of pretraining on 2 CPU cores (held-out MLM loss 6.04 at step 2,400).
"""
from ml_collections import ConfigDict

from bert.config import pretraining_config


def get_config() -> ConfigDict:
    c = pretraining_config()
    c.seed = 0
    c.train_steps = 2400
    # The run stops halfway through its learning-rate schedule (peak 1e-3 → 5e-4): a tiny model
    # leaves the "unigram" plateau only after ~1,000 steps and still learns fast at the end.
    c.schedule_steps = 4800
    c.batch_size = 32  # global
    c.max_seq_len = 128
    c.max_predictions_per_seq = 20
    c.learning_rate = 1e-3  # small models train well at a larger peak than BERT-base's 1e-4
    c.warmup_steps = 100
    c.log_every = 50
    c.eval_every = 800
    c.checkpoint_every = 800
    c.keep_checkpoints = 2

    c.model.preset = "tiny"  # L2 H128 A2: fast enough to learn visibly in minutes on 2 cores
    c.model.vocab_size = 8000
    # No dropout: 10M tokens seen (2,400 x 32 x 128) over a 1.5M-token corpus do not overfit a
    # 2-layer model, and attention dropout 0 lets training use the fused attention path.
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0

    c.data.train_files = "data/sotu/train/*.txt"
    c.data.eval_files = "data/sotu/eval/*.txt"
    c.data.dupe_factor = 2  # two NSP pairings of the corpus; dynamic masking varies the masks
    c.data.eval_dupe_factor = 3  # ~1,300 held-out NSP pairs instead of ~430
    return c
