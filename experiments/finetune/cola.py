"""GLUE CoLA (linguistic acceptability; Matthews correlation), the paper's recipe.

    python -m bert.finetune --config experiments/finetune/cola.py --workdir runs/cola \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=GLUE/COLA/train.tsv --config.eval_file=GLUE/COLA/dev.tsv

GLUE files as distributed (TSV, quoting off). 128 tokens, batch 32, 3 epochs, AdamW with 10%
warmup; one run at 2e-5, or --config.lr_grid=paper for the paper's {5e-5, 4e-5, 3e-5, 2e-5}
chosen on dev, and --config.seeds=1,2,3 for restarts (small sets are unstable, as the paper notes).
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "cola"
    return c
