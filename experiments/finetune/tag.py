"""Any token-tagging task in CoNLL columns (token first, tag last; blank line between sentences):
the tag set is read from the training file unless --config.labels lists it.

    python -m bert.finetune --config experiments/finetune/tag.py --workdir runs/tag \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=train.conll \\
        --config.eval_file=dev.conll
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "tag"
    c.learning_rate = 5e-5
    return c
