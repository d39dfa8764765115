"""WNUT-16 tweet NER (data/wnut: 1,881 train / 400 dev tweets, 10 entity types in BIO) with the
generic `tag` task, sized for `make demo`; entity-level f1 as conlleval scores it (0.073 from
the demo's fast-recipe model, 0.068 from random weights: both find only a few entities at this
size).

    python -m bert.finetune --config experiments/finetune/demo_wnut.py \\
        --workdir runs/demo/finetune/wnut/pretrained [--config.random_init=True]

`tag`, not `ner`: tweets are independent, so no window is filled with its neighbours.
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "tag"
    c.init_checkpoint = "runs/demo"
    c.train_file = "data/wnut/train.conll"
    c.eval_file = "data/wnut/dev.conll"
    c.max_seq_len = 64  # tokens; 82% of the tweets fit whole, longer ones become windows
    c.batch_size = 32
    # 95% of the words are O: at 1e-4 and 3 epochs both starts stay at "all O" (f1 0); a larger
    # step and more passes get past it within the demo's minute.
    c.learning_rate = 1e-3
    c.num_train_epochs = 5.0
    return c
