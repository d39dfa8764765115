"""Sentence or sentence-pair classification (or regression) on any CSV, TSV or JSONL file: name
the columns in config.reader; labels are the sorted labels of the training file unless
--config.reader.labels lists them.

    python -m bert.finetune --config experiments/finetune/classify.py --workdir runs/classify \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=train.csv \\
        --config.eval_file=dev.csv --config.reader.text_column=sentence \\
        --config.reader.label_column=label [--config.reader.pair_column=sentence2]

The GLUE recipe: 128 tokens, batch 32, 3 epochs at 2e-5; accuracy, with f1 of class 1 and
Matthews' correlation reported beside it.
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "classify"
    return c
