"""Movie-review sentiment (data/sentiment: 9,070 train / 1,000 dev snippets, SST-2 layout),
sized for `make demo` (dev accuracy 0.617 from the demo's fast-recipe model, 0.507 from random
weights of the same architecture and starts; README, "What the demo shows").

    python -m bert.finetune --config experiments/finetune/demo_sentiment.py \\
        --workdir runs/demo/finetune/sentiment/pretrained [--config.random_init=True]

Starts from the `make demo` work directory (runs/demo); --config.random_init=True keeps its
architecture and tokenizer with fresh weights, the baseline the demo prints beside it.
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "sst2"  # the files are in GLUE SST-2's layout: sentence<TAB>label, 1 = positive
    c.init_checkpoint = "runs/demo"
    c.train_file = "data/sentiment/train.tsv"
    c.eval_file = "data/sentiment/dev.tsv"
    c.max_seq_len = 64  # tokens; 95% of the snippets fit whole (median 36)
    c.batch_size = 32
    c.learning_rate = 1e-4  # a 2-layer model fine-tunes best above BERT-base's 2e-5..5e-5
    c.num_train_epochs = 1.0  # one pass: a short fine-tuning is where a pretrained start shows most
    return c
