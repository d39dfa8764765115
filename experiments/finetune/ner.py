"""Named-entity recognition on CoNLL-2003-style files (token first, tag last, blank lines between
sentences, -DOCSTART- between documents), the paper's fine-tuning approach: the first sub-token
of each word is labelled and predicted; entity-level precision / recall / f1 as conlleval.

    python -m bert.finetune --config experiments/finetune/ner.py --workdir runs/ner \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=eng.train \\
        --config.eval_file=eng.testa

The paper fills each window with the sentence's document as context (document_context); IOB1
and IOB2 tags are both read and scored alike. 128 tokens, batch 32, 3 epochs at 5e-5.
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "ner"
    c.learning_rate = 5e-5
    c.document_context = True
    return c
