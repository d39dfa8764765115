"""GLUE QNLI (question / sentence entailment; accuracy), the paper's recipe.

    python -m bert.finetune --config experiments/finetune/qnli.py --workdir runs/qnli \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=GLUE/QNLI/train.tsv --config.eval_file=GLUE/QNLI/dev.tsv

GLUE files as distributed (TSV, quoting off). 128 tokens, batch 32, 3 epochs, AdamW with 10%
warmup; one run at 2e-5, or --config.lr_grid=paper for the paper's {5e-5, 4e-5, 3e-5, 2e-5}
chosen on dev, and --config.seeds=1,2,3 for restarts (small sets are unstable, as the paper notes).
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "qnli"
    return c
