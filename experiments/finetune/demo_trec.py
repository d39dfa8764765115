"""TREC question types (data/trec: 4,880 train / 500 dev questions, 6 coarse classes) with the
generic `classify` task, sized for `make demo` (dev accuracy 0.390 from the demo's fast-recipe model, 0.530
from random weights of the same starts; both about 0.78 at --config.learning_rate=1e-3).

    python -m bert.finetune --config experiments/finetune/demo_trec.py \\
        --workdir runs/demo/finetune/trec/pretrained [--config.random_init=True]

--config.reader.label_column=fine trains on the 50 fine classes (LOC:city, NUM:date, ...) instead.
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "classify"
    c.init_checkpoint = "runs/demo"
    c.train_file = "data/trec/train.tsv"
    c.eval_file = "data/trec/dev.tsv"
    c.reader.text_column = "text"
    c.reader.label_column = "coarse"  # ABBR DESC ENTY HUM LOC NUM
    c.max_seq_len = 32  # tokens; 95% of the questions fit whole (median 18)
    c.batch_size = 32
    c.learning_rate = 1e-4
    c.num_train_epochs = 2.0
    return c
