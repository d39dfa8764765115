"""GLUE MNLI (3-way entailment; accuracy on matched, accuracy_mm on mismatched dev), the paper's recipe.

    python -m bert.finetune --config experiments/finetune/mnli.py --workdir runs/mnli \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=GLUE/MNLI/train.tsv --config.eval_file=GLUE/MNLI/dev_matched.tsv \\
        --config.eval_mismatched_file=GLUE/MNLI/dev_mismatched.tsv --config.test_file=GLUE/MNLI/test_matched.tsv \\
        --config.test_mismatched_file=GLUE/MNLI/test_mismatched.tsv

GLUE files as distributed (TSV, quoting off). 128 tokens, batch 32, 3 epochs, AdamW with 10%
warmup; one run at 2e-5, or --config.lr_grid=paper for the paper's {5e-5, 4e-5, 3e-5, 2e-5}
chosen on dev, and --config.seeds=1,2,3 for restarts (small sets are unstable, as the paper notes).
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "mnli"
    return c
