"""SWAG multiple choice (which of four endings follows), the paper's recipe: each choice is
[CLS] sent1 [SEP] sent2 ending [SEP], one score per choice from [CLS], softmax over the four;
3 epochs at 2e-5, batch 16 questions (64 rows).

    python -m bert.finetune --config experiments/finetune/swag.py --workdir runs/swag \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=train.csv --config.eval_file=val.csv
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "swag"
    c.learning_rate = 2e-5
    c.batch_size = 16
    c.num_train_epochs = 3.0
    return c
